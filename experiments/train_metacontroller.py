r"""Trains the metacontroller on a frozen pretrained base model (docs/method.md §6).

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


from irl import cli
from irl.analysis import reports
from irl.train import metacontroller

_CONFIG = cli.config_flag()
_WORKDIR = cli.workdir_flag(
    'Holds the pretrained base model; checkpoints, metrics and '
    'figures go here; a rerun resumes.')


def main(argv):
  del argv
  summary = metacontroller.train(_CONFIG.value, _WORKDIR.value)
  summary['figure'] = reports.metacontroller_traces(_CONFIG.value,
                                                    _WORKDIR.value)
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  cli.run(main)
