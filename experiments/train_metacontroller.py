r"""Trains the metacontroller on a frozen pretrained base model (PAPER.md §6).

  python experiments/train_metacontroller.py --config=configs/gridworld.py:cpu \
      --workdir=/tmp/irl/cpu

Reads the base model from <workdir>/checkpoints/pretrain (run
experiments/pretrain.py with the same --config and --workdir first). Writes
<workdir>/checkpoints/metacontroller*, metrics, and the segmentation analysis
(β traces against subgoal boundaries, boundary F1) in
<workdir>/metacontroller*/. A rerun resumes. Baselines:
  --config.metacontroller.switching=always          β ≡ 1
  --config.metacontroller.base_model=cotrain        θ trained jointly
  --config.metacontroller.base_model=cotrain_scratch  θ from scratch
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from irl.analysis import reports
from irl.train import metacontroller

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/gridworld.py:cpu', 'Config file and preset.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Holds the pretrained base '
                               'model; checkpoints, metrics and figures go '
                               'here; a rerun resumes.', required=True)


def main(argv):
  del argv
  summary = metacontroller.train(_CONFIG.value, _WORKDIR.value)
  summary['figure'] = reports.metacontroller_traces(_CONFIG.value,
                                                    _WORKDIR.value)
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  app.run(main)
