r"""Rolls out the shortest-path expert and reports its success rates.

  python experiments/expert_demo.py --config=configs/gridworld.py:cpu \
      --workdir=/tmp/irl_demo

Prints the success rate on the pretraining tasks (ε = 0 and the ε mix of D)
and on the post-training task, and writes a PNG strip of one post-training
episode and `expert_demo.json` to the workdir.
"""

from absl import flags

from irl import cli
from irl.analysis import expert_demo

_CONFIG = cli.config_flag()
_WORKDIR = flags.DEFINE_string('workdir', '/tmp/irl_expert_demo',
                               'Where the figure and JSON go.')


def main(argv):
  del argv
  expert_demo.run_expert_demo(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  cli.run(main)
