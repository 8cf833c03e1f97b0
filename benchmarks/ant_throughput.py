r"""Ant-pinpad stepping throughput, side by side with Brax's own MJX ant.

Both step the same model (brax's `ant.xml`) with the same MJX settings
(Newton solver, 1 iteration, 4 line-search iterations, no Euler damping,
5 frames of 0.01 s per control step): ours adds the arena's cell logic, the
pinpad rules and its observation; Brax's `ant` environment
(`brax.envs.get_environment('ant', backend='mjx')`) adds its rewards and
its own observation. Each timed call is one `jax.jit` of a `lax.scan` over
`--num_steps` control steps of a `vmap` over the environments, with uniform
random actions; the observations and rewards are summed into the carry so
XLA keeps them. The point body (no physics engine) is timed too.
Steps/s = environments × steps / steady-state seconds (the best of
`--repeats` calls; the median is recorded too).

Usage (from the repository root):
  python benchmarks/ant_throughput.py                # 1, 64, 1024 environments
  python benchmarks/ant_throughput.py --quick        # smoke run
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp

from irl.envs import registry
from irl.utils import machine as machine_lib

_NUM_ENVS = flags.DEFINE_list('num_envs', ['1', '64', '1024'],
                              'Parallel environments to time.')
_NUM_STEPS = flags.DEFINE_integer('num_steps', 20,
                                  'Control steps per timed call.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls per measurement.')
_OUT = flags.DEFINE_string('out', 'benchmarks/results/ant_throughput.json',
                           'JSON results path.')
_QUICK = flags.DEFINE_bool('quick', False,
                           'Smoke run: 1 and 8 environments, 2 steps.')


def _timed(fn: Callable[[jax.Array], Any], key: jax.Array,
           repeats: int) -> tuple[float, float, float]:
  """(compile seconds, best, median steady-state seconds) of fn(key)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(key))
  first = time.perf_counter() - t0
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(jax.random.fold_in(key, i + 1)))
    times.append(time.perf_counter() - t0)
  return first - min(times), min(times), statistics.median(times)


def _scan_steps(step: Callable, state: Any, key: jax.Array, num_envs: int,
                num_steps: int, action_dim: int) -> jax.Array:
  """Steps every environment `num_steps` times with random actions; the
  float32 sum of observations and rewards, so nothing is dropped."""
  def body(carry, k):
    state, total = carry
    actions = jax.random.uniform(k, (num_envs, action_dim), minval=-1.0)
    state, obs, reward = step(state, actions)
    return (state, total + obs.sum() + reward.sum()), None
  (_, total), _ = jax.lax.scan(body, (state, jnp.float32(0)),
                               jax.random.split(key, num_steps))
  return total


def ours(body: str, num_envs: int, num_steps: int):
  env = registry.get(f'{body}_pinpad')
  params = env.params_from_config(env.default_config())
  states, _ = jax.jit(jax.vmap(lambda k: env.reset(k, params)))(
      jax.random.split(jax.random.key(0), num_envs))

  def step(s, a):
    s, obs, reward, _, _ = jax.vmap(lambda s, a: env.step(s, a, params))(s, a)
    return s, obs, reward
  return jax.jit(lambda k: _scan_steps(step, states, k, num_envs, num_steps,
                                       params.action_dim))


def brax_ant(num_envs: int, num_steps: int):
  from brax import envs  # noqa: PLC0415
  env = envs.get_environment('ant', backend='mjx')
  states = jax.jit(jax.vmap(env.reset))(
      jax.random.split(jax.random.key(0), num_envs))

  def step(s, a):
    s = jax.vmap(env.step)(s, a)
    return s, s.obs, s.reward
  return jax.jit(lambda k: _scan_steps(step, states, k, num_envs, num_steps,
                                       env.action_size))


def main(argv):
  del argv
  sizes = [1, 8] if _QUICK.value else [int(n) for n in _NUM_ENVS.value]
  steps = 2 if _QUICK.value else _NUM_STEPS.value
  rows = []
  print(f'{"env":<12} {"envs":>6} {"steps/s":>10} {"median":>10} '
        f'{"compile s":>9} {"ours/brax":>9}')
  for n in sizes:
    per = {}
    for name, make in (('ant_pinpad', lambda: ours('ant', n, steps)),
                       ('brax_ant', lambda: brax_ant(n, steps)),
                       ('point_pinpad', lambda: ours('point', n, steps))):
      compile_s, best, median = _timed(make(), jax.random.key(1),
                                       _REPEATS.value)
      per[name] = n * steps / best
      ratio = (per['ant_pinpad'] / per['brax_ant']
               if name == 'brax_ant' else None)
      rows.append({'env': name, 'num_envs': n, 'num_steps': steps,
                   'steps_per_sec': per[name],
                   'steps_per_sec_median': n * steps / median,
                   'compile_s': compile_s, 'ratio_ours_vs_brax': ratio})
      print(f'{name:<12} {n:>6} {per[name]:>10.0f} {n * steps / median:>10.0f}'
            f' {compile_s:>9.1f} {"" if ratio is None else f"{ratio:.2f}":>9}',
            flush=True)
  out = {'machine': machine_lib.machine_info(), 'rows': rows}
  os.makedirs(os.path.dirname(_OUT.value) or '.', exist_ok=True)
  with open(_OUT.value, 'w') as f:
    json.dump(out, f, indent=2)
  print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
