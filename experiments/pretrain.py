r"""Pretrains the base model on fresh expert data, then evaluates it.

  python experiments/pretrain.py --config=configs/gridworld.py:cpu \
      --workdir=/tmp/irl/pretrain

Rerunning with the same workdir resumes from the last checkpoint.
"""

import json


from irl import cli
from irl.train import pretrain

_CONFIG = cli.config_flag()
_WORKDIR = cli.workdir_flag(
    'Checkpoints, metrics, figures; a rerun resumes from here.')


def main(argv):
  del argv
  summary = pretrain.train(_CONFIG.value, _WORKDIR.value)
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  cli.run(main)
