r"""Pretrains the base model on fresh expert data, then evaluates it.

  python experiments/pretrain.py --config=configs/gridworld.py:cpu \
      --workdir=/tmp/irl/pretrain

Rerunning with the same workdir resumes from the last checkpoint.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from irl.train import pretrain

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/gridworld.py:cpu', 'Config file and preset.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Checkpoints, metrics, '
                               'figures; a rerun resumes from here.',
                               required=True)


def main(argv):
  del argv
  summary = pretrain.train(_CONFIG.value, _WORKDIR.value)
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  app.run(main)
