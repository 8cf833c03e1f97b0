r"""Trains the arena's expert with Brax's PPO (docs/method.md §3).

  python experiments/train_expert.py --config=configs/ant.py:cpu \
      --workdir=/tmp/irl/point

Writes <workdir>/checkpoints/expert.msgpack and <workdir>/expert/summary.json
(success on the pretraining tasks and on the post-training task, and the
training curve). A rerun with the same config loads it; one whose env or
expert settings differ is refused (use a fresh workdir).
"""

import json

from irl import cli
from irl.train import arena_expert

_CONFIG = cli.config_flag('configs/ant.py:cpu')
_WORKDIR = cli.workdir_flag('The expert and its summary go here.')


def main(argv):
  del argv
  summary = arena_expert.train(_CONFIG.value, _WORKDIR.value)
  print(json.dumps({k: v for k, v in summary.items() if k != 'curve'},
                   indent=2))


if __name__ == '__main__':
  cli.run(main)
