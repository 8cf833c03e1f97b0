r"""Linear subgoal probes on every layer of every kept pretraining checkpoint.

  python experiments/pretrain.py --config=configs/gridworld.py:cpu \
      --workdir=/tmp/irl/cpu                      # first: the base model
  python experiments/probe.py --config=configs/gridworld.py:cpu \
      --workdir=/tmp/irl/cpu

Writes `<workdir>/probe/`: per-checkpoint JSON, results.json, CSVs and the
Fig. 3 style figure. A rerun skips the checkpoints already probed.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from irl.analysis import probes

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/gridworld.py:cpu', 'Config file and preset.')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Workdir of a finished experiments/pretrain.py run; '
    'results go to <workdir>/probe/.', required=True)


def main(argv):
  del argv
  try:
    summary = probes.run(_CONFIG.value, _WORKDIR.value)
  except FileNotFoundError as e:
    raise app.UsageError(str(e)) from None
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  app.run(main)
