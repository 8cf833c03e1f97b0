r"""The whole pipeline under a wall-clock budget: the largest run that fits.

Pretraining gets `--pretrain_share` of the budget at a constant learning rate
(the preset's schedule must be `constant`): it runs until its share is spent
and is stopped, and the pipeline then continues from the last checkpoint it
kept, loading exactly that step (every later phase is sized by the preset).
Every other phase runs as `experiments/reproduce.py` runs it, in its order,
until the budget is spent; a phase cut off by the budget reports nothing, the
finished ones are in REPORT.md. Prints the chain's links and the time per
phase, and writes them with every phase's summary to --out as JSON.

  python benchmarks/timed_pipeline.py --config=configs/gridworld.py:gpu \
      --workdir=/tmp/irl/gpu --budget_s=540 --out=/tmp/irl/gpu.json

Extra config overrides follow `--`, as on any entry point:
  python benchmarks/timed_pipeline.py ... -- --config.rl.num_updates=50
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

from absl import app
from absl import flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_CONFIG = flags.DEFINE_string('config', 'configs/gridworld.py:gpu',
                              'Config file and preset.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.',
                               required=True)
_BUDGET = flags.DEFINE_float('budget_s', 540.0, 'Wall-clock budget, seconds.')
_SHARE = flags.DEFINE_float('pretrain_share', 0.4,
                            'Share of the budget spent pretraining.')
_RESERVE = flags.DEFINE_float('reserve_s', 20.0, 'Seconds kept for the '
                              'report at the end.')
_OUT = flags.DEFINE_string('out', None, 'JSON results (default: '
                           '<workdir>/timed_pipeline.json).')


def _run(args: list[str], timeout: float, log) -> tuple[int, float]:
  """Runs `python args` with a timeout; returns (exit code, seconds)."""
  t0 = time.time()
  log.write(f'\n$ {" ".join(args)}  (timeout {timeout:.0f} s)\n')
  log.flush()
  try:
    rc = subprocess.run([sys.executable] + args, cwd=ROOT, stdout=log,
                        stderr=subprocess.STDOUT, timeout=max(timeout, 1.0),
                        check=False).returncode
  except subprocess.TimeoutExpired:
    rc = 124
  return rc, time.time() - t0


def last_checkpoint(workdir: str) -> int:
  """The newest finished pretraining checkpoint's step (0: none)."""
  path = os.path.join(workdir, 'checkpoints', 'pretrain')
  steps = [int(n) for n in os.listdir(path) if n.isdigit()] if (
      os.path.isdir(path)) else []
  return max(steps, default=0)


def main(argv):
  overrides = [a for a in argv[1:] if a.startswith('--config.')]
  workdir = os.path.abspath(_WORKDIR.value)
  os.makedirs(workdir, exist_ok=True)
  out = _OUT.value or os.path.join(workdir, 'timed_pipeline.json')
  start = time.time()
  left = lambda: _BUDGET.value - (time.time() - start)
  base = [f'--config={_CONFIG.value}', f'--workdir={workdir}'] + overrides
  with open(os.path.join(workdir, 'timed_pipeline.log'), 'a') as log:
    # Pretraining: as many steps as its share of the budget allows.
    rc, pre_s = _run(['experiments/pretrain.py'] + base
                     + ['--config.pretrain.num_steps=10000000'],
                     _SHARE.value * _BUDGET.value, log)
    steps = last_checkpoint(workdir)
    if steps == 0:
      raise app.UsageError(f'pretraining kept no checkpoint in {pre_s:.0f} s '
                           f'(exit {rc}); see {workdir}/timed_pipeline.log')
    rest = base + [f'--config.pretrain.num_steps={steps}']
    rc, _ = _run(['experiments/reproduce.py'] + rest,
                 left() - _RESERVE.value, log)
    if rc != 0:
      # Cut off: REPORT.md from the finished phases (reproduce writes it
      # only at its end).
      done = sorted(p.stem for p in pathlib.Path(workdir, 'pipeline').glob(
          '*.json'))
      _run(['experiments/reproduce.py'] + rest
           + [f'--phases={",".join(done)}'], max(left(), 60.0), log)

  from irl.analysis import report  # pylint: disable=g-import-not-at-top
  markers = report.load_markers(workdir)
  links = report.link_rows(markers)
  result = {
      'config': _CONFIG.value, 'overrides': overrides,
      'budget_s': _BUDGET.value, 'elapsed_s': time.time() - start,
      'pretrain_seconds_timed': pre_s, 'pretrain_steps': steps,
      'reproduce_exit': rc,
      'phase_seconds': {p: m['seconds'] for p, m in markers.items()},
      'links': links,
      'summaries': {p: m['summary'] for p, m in markers.items()},
  }
  with open(out, 'w') as f:
    json.dump(result, f, indent=1, default=str)
  print(f'pretraining: {steps} steps in {pre_s:.0f} s (timed share)')
  print('| phase | seconds |')
  print('|---|---|')
  for p, s in result['phase_seconds'].items():
    print(f'| {p} | {s:.0f} |')
  print(f'| total (with the timed pretraining) | {result["elapsed_s"]:.0f} |')
  print('\n| link | measured | target (cpu preset) | paper |')
  print('|---|---|---|---|')
  for row in links:
    print('| ' + ' | '.join(row) + ' |')
  print(f'\nJSON: {out}')


if __name__ == '__main__':
  app.run(main)
