r"""Internal RL (docs/method.md §7) and its baselines (§8) on the post-training task.

  python experiments/internal_rl.py --config=configs/gridworld.py:cpu \
      --workdir=/tmp/irl/cpu --method=internal

Methods: internal (the metacontroller's abstract actions), raw_action (PPO on
the base model's own actions), no_temporal_abstraction (metacontroller with
β ≡ 1), cotrained (metacontroller co-trained with θ), compile (CompILE).
Reads <workdir>/checkpoints/pretrain and the method's metacontroller (or
CompILE) run; run experiments/pretrain.py and train_metacontroller.py (with
the matching --config.metacontroller.switching / base_model) first. All
`rl.seeds` train at once (vmap). Writes <workdir>/checkpoints/rl_<method>,
metrics <workdir>/metrics/rl_<method>.jsonl (+ TensorBoard), and
<workdir>/rl_<method>/success.{csv,png}. A rerun resumes. Any novel task
runs on the same workdir (--config.env.post_task=0-1-2-3-...): its runs are
named rl_<method>_task_<task>, beside those of the paper's task.
"""

import json

from absl import flags

from irl import cli
from irl.analysis import fig8
from irl.rl import methods as rl_methods
from irl.rl import train

_CONFIG = cli.config_flag()
_WORKDIR = cli.workdir_flag(
    'Holds the pretrained models; checkpoints, metrics and figures '
    'go here; a rerun resumes.')
_METHOD = flags.DEFINE_enum('method', None, list(rl_methods.METHODS),
                            'Overrides config.rl.method.')


def main(argv):
  del argv
  summary = train.train(_CONFIG.value, _WORKDIR.value, _METHOD.value)
  fig8.run_curve(_CONFIG.value, _WORKDIR.value, _METHOD.value)
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  cli.run(main)
