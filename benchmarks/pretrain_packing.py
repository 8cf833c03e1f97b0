r"""Pretraining with packed rows: real steps per second, side by side.

The real pretraining chunk (`irl.train.pretrain.make_pretrainer`: expert data
generated inside the step, the model, AdamW) of a preset, with
`data.episodes_per_row` = 1 (one episode per row, padded to `data.seq_len`)
and K > 1 (K episodes back to back, attention masked per episode), measured
in one process, alternating. Reported per K: optimiser steps/s, the fraction
of the row's steps that are real (valid), valid tokens/s, episodes begun per
step, and the ratios to K = 1. Time is wall clock, best of `--repeats`
steady-state chunks of `pretrain.log_every` steps.

Usage (from the repository root):
  python benchmarks/pretrain_packing.py                  # cpu preset, K = 1, 2, 3
  python benchmarks/pretrain_packing.py --quick          # test preset, seconds
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # pylint: disable=g-import-not-at-top

from configs import gridworld
from irl.train import pretrain
from irl.utils import machine as machine_lib

_PRESET = flags.DEFINE_string('preset', 'cpu', 'Config preset.')
_PACK = flags.DEFINE_list('episodes_per_row', ['1', '2', '3'],
                          'Values of data.episodes_per_row (1 first).')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed chunks per value.')
_QUICK = flags.DEFINE_bool('quick', False, 'Test preset, 1 repeat.')
_OUT = flags.DEFINE_string('out', 'benchmarks/results/pretrain_packing.json',
                           'JSON output.')


def main(argv):
  del argv
  preset = 'test' if _QUICK.value else _PRESET.value
  repeats = 1 if _QUICK.value else _REPEATS.value
  values = [int(k) for k in _PACK.value]
  runs = {}
  for k in values:
    config = gridworld.get_config(preset)
    config.data.episodes_per_row = k
    trainer = pretrain.make_pretrainer(config)
    state = trainer.init(jax.random.key(0))
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(trainer.train_chunk(state))
    runs[k] = dict(trainer=trainer, state=state, times=[], metrics=[],
                   compile_s=time.perf_counter() - t0, config=config)
  for _ in range(repeats):          # alternate, so drift hits every K alike
    for k in values:
      run = runs[k]
      t0 = time.perf_counter()
      run['state'], m = jax.block_until_ready(
          run['trainer'].train_chunk(run['state']))
      run['times'].append(time.perf_counter() - t0)
      run['metrics'].append(jax.device_get(m))
  rows = []
  for k in values:
    run = runs[k]
    c = run['config']
    steps = c.pretrain.log_every
    secs = min(run['times']) / steps
    valid = sum(float(m['valid_fraction']) for m in run['metrics']) / repeats
    episodes = sum(float(m['episodes_per_row']) for m in run['metrics']
                   ) / repeats * c.data.batch_size
    tokens = c.data.batch_size * c.data.seq_len
    rows.append(dict(episodes_per_row=k, batch=c.data.batch_size,
                     seq_len=c.data.seq_len, s_per_step=secs,
                     steps_per_s=1.0 / secs, valid_fraction=valid,
                     valid_tokens_per_s=tokens * valid / secs,
                     episodes_per_step=episodes,
                     compile_s=run['compile_s'], step_s_runs=[
                         t / steps for t in run['times']]))
  base = rows[0]
  for r in rows:
    r['step_time_ratio'] = r['s_per_step'] / base['s_per_step']
    r['valid_tokens_per_s_ratio'] = (r['valid_tokens_per_s']
                                     / base['valid_tokens_per_s'])
  print(f'pretraining, preset {preset}, batch {base["batch"]} x '
        f'{base["seq_len"]}, {jax.devices()[0]}')
  print(f"{'K':>3} {'s/step':>8} {'valid':>7} {'valid tok/s':>12} "
        f"{'episodes/step':>14} {'step time x':>12} {'valid tok/s x':>14}")
  for r in rows:
    print(f"{r['episodes_per_row']:>3} {r['s_per_step']:>8.4f} "
          f"{r['valid_fraction']:>7.3f} {r['valid_tokens_per_s']:>12,.0f} "
          f"{r['episodes_per_step']:>14.1f} {r['step_time_ratio']:>12.3f} "
          f"{r['valid_tokens_per_s_ratio']:>14.3f}")
  os.makedirs(os.path.dirname(_OUT.value) or '.', exist_ok=True)
  with open(_OUT.value, 'w') as f:
    json.dump({'machine': machine_lib.machine_info(), 'rows': rows}, f,
              indent=2)
  print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
