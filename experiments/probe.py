r"""Linear subgoal probes on every layer of every kept pretraining checkpoint.

  python experiments/pretrain.py --config=configs/gridworld.py:cpu \
      --workdir=/tmp/irl/cpu                      # first: the base model
  python experiments/probe.py --config=configs/gridworld.py:cpu \
      --workdir=/tmp/irl/cpu

Writes `<workdir>/probe/`: per-checkpoint JSON, results.json, CSVs and the
Fig. 3 style figure. A rerun skips the checkpoints already probed.
"""

import json


from irl import cli
from irl.analysis import fig3

_CONFIG = cli.config_flag()
_WORKDIR = cli.workdir_flag(
    'Workdir of a finished experiments/pretrain.py run; results go '
    'to <workdir>/probe/.')


def main(argv):
  del argv
  summary = fig3.run(_CONFIG.value, _WORKDIR.value)
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  cli.run(main)
