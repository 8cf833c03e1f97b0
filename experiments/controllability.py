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

from absl import app
from absl import flags
from ml_collections import config_flags

from irl import pipeline
from irl.analysis import controllability
from irl.train import pretrain

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/gridworld.py:cpu', 'Config file and preset.')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Workdir of a finished experiments/pretrain.py run; '
    'results go to <workdir>/control/.', required=True)


def main(argv):
  del argv
  try:
    controllability.validate(_CONFIG.value)
    pretrain.load_pretrained(_CONFIG.value, _WORKDIR.value, 'controllability')
    pipeline.pretrain_depth_variants(_CONFIG.value, _WORKDIR.value)
    summary = controllability.run(_CONFIG.value, _WORKDIR.value)
  except FileNotFoundError as e:
    raise app.UsageError(str(e)) from None
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  app.run(main)
