r"""Rate-distortion sweep of the metacontroller (docs/method.md §6, Fig. 7).

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


from irl import cli
from irl.analysis import rate_distortion

_CONFIG = cli.config_flag()
_WORKDIR = cli.workdir_flag(
    'Holds the pretrained base model; results go to '
    '<workdir>/rate_distortion; a rerun resumes.')


def main(argv):
  del argv
  records = rate_distortion.run(_CONFIG.value, _WORKDIR.value)
  keys = ('base_model', 'kl_weight', 'seed', 'action_nll', 'kl', 'f1',
          'median_switches_per_episode', 'median_boundaries_per_episode')
  for r in records:
    print(json.dumps({k: r[k] for k in keys}))


if __name__ == '__main__':
  cli.run(main)
