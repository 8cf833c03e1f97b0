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

from absl import flags

from irl import cli
from irl import pipeline

_CONFIG = cli.config_flag()
_WORKDIR = cli.workdir_flag(
    'Everything goes here; a rerun skips finished phases.')
_PHASES = flags.DEFINE_list('phases', list(pipeline.PHASES),
                            f'Subset of {", ".join(pipeline.PHASES)}.')


def main(argv):
  del argv
  results = pipeline.run(_CONFIG.value, _WORKDIR.value, _PHASES.value)
  print(json.dumps({p: round(r['seconds'], 1) for p, r in results.items()},
                   indent=2))
  print(f'Report: {_WORKDIR.value}/REPORT.md')


if __name__ == '__main__':
  cli.run(main)
