r"""Environment and expert-data throughput, side by side with NAVIX.

1. Random-action stepping with auto-reset, `jax.jit(lax.scan(...))` over steps
   and `vmap` over environments, for our gridworld-pinpad (auto-reset from a
   pre-generated layout pool, and at the largest sizes also without a pool, so
   the cost of full rejection-sampled resets shows) and for NAVIX
   `Navix-Empty-8x8-v0` (its own auto-reset inside `env.step`). Both draw one
   action per environment from its own key and fold the float32 sum of every
   observation and the rewards into the scan carry, so XLA cannot drop the
   observation. Steps/s = num_envs · num_steps / steady-state wall time;
   compile time = first call minus steady state.
2. Expert data: `make_expert_stream` batches (episodes/s, seconds per batch)
   for pretraining episodes (seq_len 64, ε = 0), full episodes with the ε mix
   (seq_len 100) and the post-training task (seq_len 100, ε = 0).

Usage (from the repository root):
  python benchmarks/env_throughput.py                 # full run, a few minutes
  python benchmarks/env_throughput.py --quick         # smoke run, seconds
  python benchmarks/env_throughput.py --num_envs=1,64,1024,8192 \
      --num_steps=1000 --out=benchmarks/results/env_throughput.json

The machine is shared with other work, so every measurement is the best of
`--repeats` steady-state calls (the median is recorded too).
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

# Runnable as a script from the repository root without installing the package.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp

from irl.data import stream as stream_lib
from irl.envs import gridworld_autoreset
from irl.envs import gridworld_pinpad as gw
from irl.envs import registry
from irl.envs import tasks
from irl.utils import machine as machine_lib

_NUM_ENVS = flags.DEFINE_list(
    'num_envs', ['1', '64', '1024', '8192'], 'Parallel environments to time.')
_NUM_STEPS = flags.DEFINE_integer(
    'num_steps', 1000, 'Scan length (steps per environment) of a timed call.')
_NOPOOL_ENVS = flags.DEFINE_list(
    'nopool_envs', ['8192'],
    'num_envs at which our env is also timed without a layout pool.')
_NOPOOL_STEPS = flags.DEFINE_integer(
    'nopool_steps', 20, 'Scan length of the (slow) no-pool variant.')
_POOL_SIZE = flags.DEFINE_integer(
    'pool_size', 4096, 'Solvable layouts in the auto-reset pool.')
_REPEATS = flags.DEFINE_integer(
    'repeats', 3, 'Steady-state calls per measurement (best is reported).')
_EXPERT_BATCH = flags.DEFINE_integer(
    'expert_batch', 1024, 'Episodes per expert-data batch.')
_EXPERT_REPEATS = flags.DEFINE_integer(
    'expert_repeats', 5, 'Steady-state expert batches per measurement.')
_SECTIONS = flags.DEFINE_list(
    'sections', ['env', 'expert'], 'What to measure: env and/or expert.')
_SKIP_NAVIX = flags.DEFINE_bool('skip_navix', False, 'Do not time NAVIX.')
_OUT = flags.DEFINE_string(
    'out', 'benchmarks/results/env_throughput.json', 'JSON results path.')
_QUICK = flags.DEFINE_bool(
    'quick', False, 'Tiny sizes (a smoke run in seconds); flags given '
    'explicitly still win.')

_QUICK_DEFAULTS = dict(num_envs=['1', '64'], num_steps=20, nopool_envs=['64'],
                       nopool_steps=10, pool_size=64, repeats=1,
                       expert_batch=16, expert_repeats=1)
NAVIX_ENV = 'Navix-Empty-8x8-v0'
EPS_MIX = (0.0, 0.05, 0.1, 0.2)


def _flag(name: str) -> Any:
  """The flag's value, or its --quick default when --quick and not given."""
  if _QUICK.value and not flags.FLAGS[name].present and name in _QUICK_DEFAULTS:
    return _QUICK_DEFAULTS[name]
  return flags.FLAGS[name].value


# ----------------------------------------------------------------------------
# Timing.

def _timed(fn: Callable[[int], Any], repeats: int) -> dict[str, float]:
  """Times fn(0) (compile + run) and fn(1..repeats) (steady state)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(0))
  first = time.perf_counter() - t0
  times = []
  for i in range(1, repeats + 1):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(i))
    times.append(time.perf_counter() - t0)
  best = min(times)
  return dict(first_s=first, best_s=best, median_s=statistics.median(times),
              compile_s=max(first - best, 0.0), runs_s=times)


def machine_info() -> dict[str, Any]:
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    navix_version = metadata.version('navix')
  except Exception:  # pylint: disable=broad-except
    navix_version = None
  return machine_lib.machine_info(navix_version=navix_version)


# ----------------------------------------------------------------------------
# 1. Random-action stepping with auto-reset.

def _scan_runner(reset_fn, step_fn, num_actions, num_envs, num_steps):
  """jit(key -> obs checksum) for `num_steps` vmapped random steps.

  reset_fn(key) -> (state, obs); step_fn(state, action) -> (state, obs,
  reward). The initial state is made by a separate jit, so the timed call is
  stepping only.
  """
  def checksum(obs, reward):
    return jnp.sum(obs, dtype=jnp.float32) + jnp.sum(reward, dtype=jnp.float32)

  def draw(key):
    return jax.vmap(num_actions)(jax.random.split(key, num_envs))

  @jax.jit
  def init(key):
    state, obs = jax.vmap(reset_fn)(jax.random.split(key, num_envs))
    return state, checksum(obs, jnp.zeros(()))

  @jax.jit
  def run(state, acc, key):
    def body(carry, k):
      state, acc = carry
      state, obs, reward = jax.vmap(step_fn)(state, draw(k))
      return (state, acc + checksum(obs, reward)), None
    (state, acc), _ = jax.lax.scan(body, (state, acc),
                                   jax.random.split(key, num_steps))
    return state, acc

  return init, run


def gridworld_runner(num_envs, num_steps, pool):
  params = gw.EnvParams()
  env = gridworld_autoreset.AutoReset(params, pool)

  def step_fn(state, action):
    state, obs, reward, _, _ = env.step(state, action)
    return state, obs, reward

  sample = lambda k: jax.random.randint(k, (), 0, gw.NUM_ACTIONS)
  return _scan_runner(env.reset, step_fn, sample, num_envs, num_steps)


def navix_runner(num_envs, num_steps):
  import navix as nx  # pylint: disable=g-import-not-at-top
  env = nx.make(NAVIX_ENV)

  def reset_fn(key):
    ts = env.reset(key)
    return ts, ts.observation

  def step_fn(ts, action):
    ts = env.step(ts, action)
    return ts, ts.observation, ts.reward

  return _scan_runner(reset_fn, step_fn, env.action_space.sample, num_envs,
                      num_steps)


def time_stepping(name, runner, num_envs, num_steps, repeats):
  init, run = runner
  state, acc = jax.block_until_ready(init(jax.random.key(0)))
  t = _timed(lambda i: run(state, acc, jax.random.key(i)), repeats)
  t.update(env=name, num_envs=num_envs, num_steps=num_steps,
           steps_per_s=num_envs * num_steps / t['best_s'])
  print(f'  {name:<22} envs={num_envs:<6} {t["steps_per_s"]:>13,.0f} steps/s'
        f'  compile {t["compile_s"]:6.2f} s', flush=True)
  return t


def bench_env(num_envs_list, num_steps, nopool_envs, nopool_steps, pool_size,
              repeats, with_navix):
  params = gw.EnvParams()
  t0 = time.perf_counter()
  pool = jax.block_until_ready(
      gw.sample_layout_pool(jax.random.key(0), params, pool_size))
  pool_s = time.perf_counter() - t0
  print(f'  layout pool of {pool_size}: {pool_s:.2f} s (compile included)')
  rows = []
  for n in num_envs_list:
    ours = time_stepping('gridworld (pool)', gridworld_runner(n, num_steps, pool),
                         n, num_steps, repeats)
    ours['variant'] = 'pool'
    rows.append(ours)
    if n in nopool_envs:
      nopool = time_stepping('gridworld (no pool)',
                             gridworld_runner(n, nopool_steps, None), n,
                             nopool_steps, repeats)
      nopool['variant'] = 'no_pool'
      rows.append(nopool)
    if with_navix:
      nav = time_stepping(NAVIX_ENV, navix_runner(n, num_steps), n, num_steps,
                          repeats)
      nav['variant'] = 'navix'
      rows.append(nav)
      ours['ratio_vs_navix'] = ours['steps_per_s'] / nav['steps_per_s']
      if n in nopool_envs:
        nopool['ratio_vs_navix'] = nopool['steps_per_s'] / nav['steps_per_s']
  return dict(pool_size=pool_size, pool_build_s=pool_s, rows=rows)


# ----------------------------------------------------------------------------
# 2. Expert data.

def expert_settings():
  pre = gw.EnvParams()
  post = pre.replace_tasks([tasks.GRID_POST_TASK])
  return [
      ('pretrain seq64 eps=0', pre, 64, (0.0,)),
      ('pretrain seq100 eps mix', pre, 100, EPS_MIX),
      ('post-task seq100 eps=0', post, 100, (0.0,)),
  ]


def bench_expert(batch_size, repeats):
  rows = []
  for name, params, seq_len, eps in expert_settings():
    sample = stream_lib.make_expert_stream(
        registry.GRIDWORLD, params, batch_size, seq_len, eps)
    t = _timed(lambda i: sample(jax.random.key(1000 + i)), repeats)
    batch = sample(jax.random.key(0))
    valid = jax.device_get(batch.valid.sum(1))
    t.update(setting=name, batch_size=batch_size, seq_len=seq_len,
             epsilons=list(eps), task=[tasks.format_task(x) for x in params.tasks]
             if len(params.tasks) == 1 else 'pretrain (16)',
             episodes_per_s=batch_size / t['best_s'],
             steps_per_s=batch_size * seq_len / t['best_s'],
             s_per_batch=t['best_s'],
             mean_length=float(valid.mean()),
             success_rate=float(jax.device_get(batch.success).mean()),
             batch_bytes=int(sum(x.nbytes for x in jax.tree.leaves(batch))))
    del batch
    print(f'  {name:<26} {t["episodes_per_s"]:>10,.0f} episodes/s '
          f'{t["s_per_batch"]:7.3f} s/batch  compile {t["compile_s"]:6.2f} s',
          flush=True)
    rows.append(t)
  return dict(rows=rows)


# ----------------------------------------------------------------------------
# Report.

def print_report(results):
  m = results['machine']
  print('\n' + '=' * 78)
  print(f'CPU: {m["cpu_model"]} ({m["cpu_count"]} cores)  jax {m["jax_version"]}'
        f'  backend {m["backend"]}  navix {m["navix_version"]}')
  if 'env' in results:
    env = results['env']
    print(f'\nRandom-action stepping with auto-reset (lax.scan + vmap, obs every '
          f'step; layout pool {env["pool_size"]})')
    print(f'{"env":<22} {"num_envs":>8} {"steps":>6} {"steps/s":>14} '
          f'{"compile s":>10} {"ours/NAVIX":>11}')
    for r in env['rows']:
      ratio = r.get('ratio_vs_navix')
      print(f'{r["env"]:<22} {r["num_envs"]:>8} {r["num_steps"]:>6} '
            f'{r["steps_per_s"]:>14,.0f} {r["compile_s"]:>10.2f} '
            f'{"" if ratio is None else f"{ratio:.2f}":>11}')
  if 'expert' in results:
    print('\nExpert data (make_expert_stream, jitted, float32 obs)')
    print(f'{"setting":<26} {"batch":>6} {"seq":>4} {"episodes/s":>11} '
          f'{"s/batch":>8} {"compile s":>10} {"mean len":>9} {"success":>8}')
    for r in results['expert']['rows']:
      print(f'{r["setting"]:<26} {r["batch_size"]:>6} {r["seq_len"]:>4} '
            f'{r["episodes_per_s"]:>11,.0f} {r["s_per_batch"]:>8.3f} '
            f'{r["compile_s"]:>10.2f} {r["mean_length"]:>9.1f} '
            f'{r["success_rate"]:>8.2f}')
  print('=' * 78)


def main(argv):
  del argv
  sections = set(_SECTIONS.value)
  results: dict[str, Any] = dict(machine=machine_info(), flags=dict(
      quick=_QUICK.value, num_envs=[int(n) for n in _flag('num_envs')],
      num_steps=_flag('num_steps'), repeats=_flag('repeats')))
  print(f'jax {jax.__version__} on {jax.default_backend()}: '
        f'{results["machine"]["cpu_model"]}', flush=True)
  if 'env' in sections:
    print('Stepping:', flush=True)
    results['env'] = bench_env(
        [int(n) for n in _flag('num_envs')], _flag('num_steps'),
        {int(n) for n in _flag('nopool_envs')}, _flag('nopool_steps'),
        _flag('pool_size'), _flag('repeats'), not _SKIP_NAVIX.value)
  if 'expert' in sections:
    print('Expert data:', flush=True)
    results['expert'] = bench_expert(_flag('expert_batch'),
                                     _flag('expert_repeats'))
  if hasattr(os, 'getloadavg'):
    results['machine']['loadavg_end'] = os.getloadavg()
  print_report(results)
  out = pathlib.Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=2))
  print(f'Wrote {out}')


if __name__ == '__main__':
  app.run(main)
