r"""Internal-RL rollout throughput: abstract decisions/s and raw env steps/s.

The real rollout of training (`irl.rl.rollouts.internal_rollout`: the base
model with cached single-step decoding, the metacontroller's switching unit
and decoder, the gridworld and the one-Hawk-layer policy, one flat
`lax.scan` over the T raw steps) and the whole update (rollout, advantages,
PPO step), at config widths with random parameters (no checkpoints needed;
the metacontroller's decoder gets a random B so U ≠ 0). With random
parameters β and episode lengths are not those of a trained model, so three
rates are reported:
  raw_steps/s       live raw environment steps (episodes not yet done)
  decisions/s       abstract decisions (gate fired) per second
  slot_steps/s      B × T raw-step slots per second: the rollout's cost does
                    not depend on when episodes end (finished ones idle)
Time is wall clock, best of --repeats steady-state calls.

Usage (from the repository root):
  python benchmarks/internal_rl_throughput.py                 # B = 256, 1024
  python benchmarks/internal_rl_throughput.py --quick         # smoke run
  python benchmarks/internal_rl_throughput.py --batch=256 --preset=paper
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
import jax.numpy as jnp
import numpy as np

from configs import gridworld
from irl.models import metacontroller as mc_lib
from irl.rl import internal_env as ienv
from irl.rl import train as rlt
from irl.train import metacontroller as mct
from irl.train import pretrain
from irl.utils import machine as machine_lib

_BATCH = flags.DEFINE_list('batch', ['256', '1024'], 'Episodes per rollout.')
_PRESET = flags.DEFINE_string('preset', 'cpu', 'Config preset (model widths).')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls per measurement.')
_QUICK = flags.DEFINE_bool('quick', False, 'Test preset, B = 16, 1 repeat.')
_UPDATE = flags.DEFINE_bool('update', True, 'Also time a whole update.')
_OUT = flags.DEFINE_string(
    'out', 'benchmarks/results/internal_rl_throughput.json', 'JSON output.')


def _random_frozen(config) -> ienv.InternalEnvParams:
  theta = pretrain.make_pretrainer(config).init(jax.random.key(0)).params
  mc = mc_lib.Metacontroller(mct.metacontroller_config(config))
  phi = mc.init(jax.random.key(1), jnp.zeros((1, 1, config.model.width)),
                jnp.ones((1, 1), bool))
  b = phi['params']['decoder']['b']
  kernel = np.random.default_rng(0).standard_normal(b['kernel'].shape)
  phi['params']['decoder']['b'] = {
      'kernel': jnp.asarray(kernel / np.sqrt(kernel.shape[0]), jnp.float32),
      'bias': b['bias']}
  return ienv.InternalEnvParams(base=theta, module=phi)


def _best(fn, repeats):
  times, out = [], None
  for i in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(i))
    times.append(time.perf_counter() - t0)
  return min(times), out


def measure(preset: str, batch: int, repeats: int, update: bool) -> dict:
  config = gridworld.get_config(preset)
  config.rl.batch_size = batch
  config.rl.seeds = [0]
  config.rl.log_every = config.rl.num_updates = config.rl.save_every = 1
  frozen = _random_frozen(config)
  learner = rlt.make_learner(config, 'internal')
  params = learner.init(jax.random.key(0), None).params
  rollout = jax.jit(learner.rollout)
  t0 = time.perf_counter()
  jax.block_until_ready(rollout(params, frozen, jax.random.key(99)))
  compile_s = time.perf_counter() - t0
  secs, data = _best(lambda i: rollout(params, frozen, jax.random.key(i)),
                     repeats)
  raw = float(data.stats['raw_steps'].sum())
  dec = float(data.stats['decisions'].sum())
  row = {'preset': preset, 'batch': batch, 'T': config.env.max_steps,
         'rollout_s': secs, 'rollout_compile_s': compile_s,
         'raw_steps_per_episode': raw / batch,
         'decisions_per_episode': dec / batch,
         'raw_steps_per_s': raw / secs, 'decisions_per_s': dec / secs,
         'slot_steps_per_s': batch * config.env.max_steps / secs,
         'episodes_per_s': batch / secs}
  if update:
    states = jax.vmap(learner.init, in_axes=(0, None))(
        jnp.stack([jax.random.key(0)]), None)
    t0 = time.perf_counter()
    states, _ = jax.block_until_ready(learner.train_chunk(states, frozen))
    row['update_compile_s'] = time.perf_counter() - t0
    holder = [states]

    def one(_):
      holder[0], m = learner.train_chunk(holder[0], frozen)
      return m
    secs, _ = _best(one, repeats)
    row['update_s'] = secs
    row['update_episodes_per_s'] = batch / secs
  return row


def main(argv):
  del argv
  preset = 'test' if _QUICK.value else _PRESET.value
  batches = [16] if _QUICK.value else [int(b) for b in _BATCH.value]
  repeats = 1 if _QUICK.value else _REPEATS.value
  rows = [measure(preset, b, repeats, _UPDATE.value) for b in batches]
  header = (f"{'B':>6} {'rollout s':>10} {'raw steps/s':>12} "
            f"{'decisions/s':>12} {'slot steps/s':>13} {'update s':>9}")
  print(f'internal-RL rollout, preset {preset}, {jax.devices()[0]}')
  print(header)
  for r in rows:
    print(f"{r['batch']:>6} {r['rollout_s']:>10.3f} {r['raw_steps_per_s']:>12,.0f}"
          f" {r['decisions_per_s']:>12,.0f} {r['slot_steps_per_s']:>13,.0f}"
          f" {r.get('update_s', float('nan')):>9.3f}")
  result = {'machine': machine_lib.machine_info(), 'rows': rows}
  os.makedirs(os.path.dirname(_OUT.value) or '.', exist_ok=True)
  with open(_OUT.value, 'w') as f:
    json.dump(result, f, indent=2)
  print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
