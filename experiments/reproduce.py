r"""The main job: every phase of internal RL, in order, into one workdir.

  python experiments/reproduce.py --config=configs/gridworld.py:cpu \
      --workdir=/tmp/irl/cpu

Phases: pretrain, probes, controllability, metacontroller (the method and the
β ≡ 1 and co-trained variants), compile (CompILE baseline), internal_rl
(internal RL and the four baselines, Fig. 8). A phase whose outputs exist is
skipped and a killed run resumes inside the phase it was in. Writes
<workdir>/REPORT.md with the results table and figures. Run only some phases:
  --phases=pretrain,probes
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from irl import pipeline

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/gridworld.py:cpu', 'Config file and preset.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Everything goes here; a '
                               'rerun skips finished phases.', required=True)
_PHASES = flags.DEFINE_list('phases', list(pipeline.PHASES),
                            f'Subset of {", ".join(pipeline.PHASES)}.')


def main(argv):
  del argv
  try:
    results = pipeline.run(_CONFIG.value, _WORKDIR.value, _PHASES.value)
  except FileNotFoundError as e:
    raise app.UsageError(str(e)) from None
  print(json.dumps({p: round(r['seconds'], 1) for p, r in results.items()},
                   indent=2))
  print(f'Report: {_WORKDIR.value}/REPORT.md')


if __name__ == '__main__':
  app.run(main)
