r"""Fig. 8: success vs episodes of internal RL and the baselines (docs/method.md §8).

  python experiments/fig8.py --config=configs/gridworld.py:cpu \
      --workdir=/tmp/irl/cpu

Runs (or resumes, or only reads) every method of `rl.fig8_methods` over
`rl.seeds` with the same algorithm and episode budget, then writes
<workdir>/fig8/ (fig8_task_<task>/ for --config.env.post_task other than the
paper's): fig8.csv (median and 25–75% of success over seeds per
logged update), fig8_success.png, fig8_success_log.png (log-scale
episodes) and
summary.json. Methods whose pretrained inputs are missing are skipped with a
warning (--noskip_missing makes that an error).
"""

import json

from absl import flags

from irl import cli
from irl.analysis import fig8

_CONFIG = cli.config_flag()
_WORKDIR = cli.workdir_flag(
    'The workdir of the pretrained models and of every method.')
_METHODS = flags.DEFINE_list('methods', None, 'Overrides rl.fig8_methods.')
_SKIP = flags.DEFINE_bool('skip_missing', True, 'Skip methods whose inputs '
                          'are missing.')


def main(argv):
  del argv
  summary = fig8.run(_CONFIG.value, _WORKDIR.value, _METHODS.value,
                       _SKIP.value)
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  cli.run(main)
