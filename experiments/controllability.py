r"""Ground-truth linear controllers: layer sweep x base-model depth (Fig. 4).

  python experiments/pretrain.py --config=configs/gridworld.py:cpu \
      --workdir=/tmp/irl/cpu                      # first: the base model
  python experiments/controllability.py --config=configs/gridworld.py:cpu \
      --workdir=/tmp/irl/cpu

Depths in `control.depths` other than `model.num_layers` are pretrained into
`<workdir>/depth_<L>/` (resumably) for `control.depth_pretrain_steps` steps.
Only the main model's layer sweep:
  ... --config.control.depths='(4,)'
Writes `<workdir>/control/`: per-(depth, layer) JSON, results.json,
success.csv and the heat map. A rerun skips what is already computed.
"""

import json


from irl import cli
from irl import pipeline
from irl.analysis import controllability
from irl.train import pretrain

_CONFIG = cli.config_flag()
_WORKDIR = cli.workdir_flag(
    'Workdir of a finished experiments/pretrain.py run; results go '
    'to <workdir>/control/.')


def main(argv):
  del argv
  pretrain.load_pretrained(_CONFIG.value, _WORKDIR.value, 'controllability')
  pipeline.pretrain_depth_variants(_CONFIG.value, _WORKDIR.value)
  summary = controllability.run(_CONFIG.value, _WORKDIR.value)
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  cli.run(main)
