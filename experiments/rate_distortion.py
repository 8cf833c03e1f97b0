r"""Rate-distortion sweep of the metacontroller (PAPER.md §6, Fig. 7).

  python experiments/rate_distortion.py --config=configs/gridworld.py:cpu \
      --workdir=/tmp/irl/cpu

Trains α ∈ config.rate_distortion.kl_weights × seeds (vmapped together) for
each base-model mode in config.rate_distortion.base_models ('frozen': the
pretrained θ from <workdir>/checkpoints/pretrain; 'cotrain_scratch': θ trained
jointly from scratch), scores each run's switching against subgoal
boundaries, and writes <workdir>/rate_distortion/results.{csv,json} and
rate_distortion.png (action NLL vs KL; filled markers: F1 ≥ f1_threshold).
A rerun resumes unfinished groups and skips finished ones.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from irl.analysis import rate_distortion

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/gridworld.py:cpu', 'Config file and preset.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Holds the pretrained base '
                               'model; results go to <workdir>/'
                               'rate_distortion; a rerun resumes.',
                               required=True)


def main(argv):
  del argv
  records = rate_distortion.run(_CONFIG.value, _WORKDIR.value)
  keys = ('base_model', 'kl_weight', 'seed', 'action_nll', 'kl', 'f1',
          'median_switches_per_episode', 'median_boundaries_per_episode')
  for r in records:
    print(json.dumps({k: r[k] for k in keys}))


if __name__ == '__main__':
  app.run(main)
