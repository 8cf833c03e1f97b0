r"""Data-parallel scaling: each phase's rate by device count, and MFU.

For every device count n of `--devices`, a subprocess that sees n devices
(a GPU host: `CUDA_VISIBLE_DEVICES=0..n-1`; a CPU: n emulated host devices,
`--xla_force_host_platform_device_count`) times the real jitted chunks of
three phases at the preset's global batch, with random parameters (no
checkpoints needed), through the same mesh as training
(irl/utils/parallel.py):
  pretrain        `pretrain.make_pretrainer(...).train_chunk`
  metacontroller  `metacontroller.make_trainer(...).train_chunk` (θ frozen)
  internal_rl     `rl.train.make_learner(...).train_chunk` (all seeds)
It reports steps (RL: updates) per second, tokens (RL: raw episode-step
slots) per second, and for pretraining the model FLOP utilisation: the
analytic matmul FLOPs of a step (`irl.models.flops.train_flops`) per second,
over n times the best square matmul of one device in the same subprocess
(f32, or bf16 with `--dtype=bfloat16`). Expert data is generated inside the
timed chunks, as in training.

The emulated CPU devices share the same cores, so on a CPU the table shows
that every phase runs on n devices and what the partitioning costs, not a
speed-up. Time is wall clock, best of `--repeats` steady-state chunks.

Usage (from the repository root):
  python benchmarks/scaling.py --quick                     # smoke run
  python benchmarks/scaling.py --preset=gpu --devices=1,2,4,8 --dtype=bfloat16
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

from absl import app
from absl import flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

_PRESET = flags.DEFINE_string('preset', 'cpu', 'Preset of --config_file.')
_CONFIG_FILE = flags.DEFINE_string(
    'config_file', 'configs/gridworld.py',
    "Config file (configs/ant.py times the arena, its expert's data from "
    '--expert_checkpoint).')
_EXPERT = flags.DEFINE_string('expert_checkpoint', '',
                              "The arena's env.expert_checkpoint.")
_BATCH = flags.DEFINE_integer('batch_size', 0, "data.batch_size (0: the "
                              "preset's).", lower_bound=0)
_LOG_EVERY = flags.DEFINE_integer('log_every', 0, 'Pretraining steps per '
                                  "timed chunk (0: the preset's).",
                                  lower_bound=0)
_DEVICES = flags.DEFINE_list('devices', ['1', '2', '4', '8'],
                             'Device counts to run.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                           'model.dtype (activations and matmuls).')
_PHASES = flags.DEFINE_list('phases', ['pretrain', 'metacontroller',
                                       'internal_rl'], 'Phases to time.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed chunks per phase.')
_QUICK = flags.DEFINE_bool('quick', False,
                           'Smoke run: the test preset on 1 and 2 devices.')
_OUT = flags.DEFINE_string('out', 'benchmarks/results/scaling.json',
                           'JSON results path.')
_WORKER = flags.DEFINE_bool('worker', False,
                            'Internal: time the phases on the devices seen.')


def _timed(fn, state, repeats: int):
  """(first call's seconds, best steady-state seconds); fn: state -> state."""
  import jax  # noqa: PLC0415
  t0 = time.perf_counter()
  state = jax.block_until_ready(fn(state))
  first = time.perf_counter() - t0
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    state = jax.block_until_ready(fn(state))
    best = min(best, time.perf_counter() - t0)
  return first, best, state


def _matmul_peak(dtype: str) -> float:
  """FLOP/s of the best square matmul on one device."""
  import jax  # noqa: PLC0415
  device = jax.devices()[0]
  matmul = jax.jit(lambda x: x @ x)
  best = 0.0
  for n in (1024, 2048) + (() if device.platform == 'cpu' else (4096, 8192)):
    # Random operands: a product of ones or zeros runs faster than real data.
    a = jax.device_put(jax.random.normal(jax.random.key(n), (n, n), dtype),
                       device)
    _, seconds, _ = _timed(lambda _: matmul(a), None, 3)
    best = max(best, 2 * n**3 / seconds)
  return best


def _config(config_file: str, preset: str) -> Any:
  """`config_file`'s `get_config(preset)`, the file found from any directory."""
  from irl import cli  # noqa: PLC0415
  if not os.path.exists(config_file):   # relative to the repository
    config_file = str(pathlib.Path(__file__).resolve().parents[1] / config_file)
  return cli.load_config(f'{config_file}:{preset}')


def run_worker(config_file: str, preset: str, dtype: str, phases: list[str],
               repeats: int, batch_size: int = 0, expert: str = '',
               log_every: int = 0) -> dict:
  """Times `phases` on the devices this process sees."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  from irl.models import flops as flops_lib  # noqa: PLC0415
  from irl.rl import internal_env as ienv  # noqa: PLC0415
  from irl.rl import methods  # noqa: PLC0415
  from irl.rl import train as rl_train  # noqa: PLC0415
  from irl.train import metacontroller as mct  # noqa: PLC0415
  from irl.train import pretrain  # noqa: PLC0415
  from irl.utils import checkpoint as ckpt_lib  # noqa: PLC0415
  from irl.utils import parallel  # noqa: PLC0415

  c = _config(config_file, preset)
  c.model.dtype = dtype
  if batch_size:
    c.data.batch_size = batch_size
  if expert:
    c.env.expert_checkpoint = expert
  if log_every:
    p = c.pretrain   # a timed chunk; the run's length is not timed
    p.log_every = p.save_every = log_every
    p.num_steps = -(-p.num_steps // log_every) * log_every
  n = parallel.num_devices()
  out = {'devices': n, 'platform': jax.devices()[0].platform,
         'device_kind': jax.devices()[0].device_kind,
         'matmul_peak_flops_per_s': _matmul_peak(dtype), 'phases': {}}
  key = jax.random.key(0)
  trainer = pretrain.make_pretrainer(c)
  state = ckpt_lib.on_device(trainer.init(key))
  theta = state.params
  if 'pretrain' in phases:
    first, best, state = _timed(lambda s: trainer.train_chunk(s)[0], state,
                                repeats)
    steps = c.pretrain.log_every / best
    flops = flops_lib.train_flops(
        trainer.model.config, c.data.batch_size, c.data.seq_len,
        obs_head=c.pretrain.obs_loss_weight > 0)
    out['phases']['pretrain'] = {
        'steps_per_s': steps, 'first_chunk_s': first,
        'tokens_per_s': steps * c.data.batch_size * c.data.seq_len,
        'mfu': steps * flops / (n * out['matmul_peak_flops_per_s'])}
  if not {'metacontroller', 'internal_rl'} & set(phases):
    return out
  m = c.metacontroller
  mtrainer = mct.make_trainer(c)
  mstate = ckpt_lib.on_device(mtrainer.init(key, theta, m.kl_weight))
  if 'metacontroller' in phases:
    first, best, mstate = _timed(
        lambda s: mtrainer.train_chunk(s, theta)[0], mstate, repeats)
    steps = m.log_every / best
    out['phases']['metacontroller'] = {
        'steps_per_s': steps, 'first_chunk_s': first,
        'tokens_per_s': steps * m.batch_size * m.seq_len}
  if 'internal_rl' in phases:
    rc = methods.method_config(c, 'internal')
    learner = rl_train.make_learner(rc)
    seeds = jnp.stack([jax.random.key(s) for s in rc.rl.seeds])
    states = ckpt_lib.on_device(
        jax.jit(jax.vmap(learner.init, in_axes=(0, None)))(seeds, None))
    frozen = ckpt_lib.on_device(ienv.InternalEnvParams(
        base=theta, module=mstate.params['metacontroller']))
    first, best, _ = _timed(lambda s: learner.train_chunk(s, frozen)[0],
                            states, repeats)
    updates = rc.rl.log_every / best
    slots = rc.rl.batch_size * len(rc.rl.seeds) * learner.env.max_steps
    out['phases']['internal_rl'] = {
        'steps_per_s': updates, 'first_chunk_s': first,
        'tokens_per_s': updates * slots}
  return out


def _subprocess(n: int, argv: list[str]) -> dict:
  # Both limits, so this process never starts JAX (on a GPU it would hold
  # most of every GPU's memory): the GPU count binds on a GPU host, the
  # emulated CPU devices where there is none.
  env = dict(os.environ, CUDA_VISIBLE_DEVICES=','.join(map(str, range(n))))
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_force_host_'
                      f'platform_device_count={n}').strip()
  done = subprocess.run([sys.executable, __file__, '--worker', *argv],
                        env=env, capture_output=True, text=True, check=False)
  if done.returncode:
    raise RuntimeError(f'{n} devices: {done.stderr[-3000:]}')
  return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
  del argv
  preset = 'test' if _QUICK.value else _PRESET.value
  counts = [1, 2] if _QUICK.value else [int(d) for d in _DEVICES.value]
  repeats = 1 if _QUICK.value else _REPEATS.value
  args = [f'--preset={preset}', f'--dtype={_DTYPE.value}',
          f'--config_file={_CONFIG_FILE.value}', f'--batch_size={_BATCH.value}',
          f'--expert_checkpoint={_EXPERT.value}', f'--log_every={_LOG_EVERY.value}',
          f'--phases={",".join(_PHASES.value)}', f'--repeats={repeats}']
  if _WORKER.value:
    print(json.dumps(run_worker(_CONFIG_FILE.value, preset, _DTYPE.value,
                                _PHASES.value, repeats, _BATCH.value,
                                _EXPERT.value, _LOG_EVERY.value)))
    return
  rows = []
  print(f'{_CONFIG_FILE.value}:{preset}, model.dtype {_DTYPE.value}, '
        f'batch {_BATCH.value or "preset"}')
  print(f'{"devices":>7} {"phase":<15} {"steps/s":>9} {"tokens/s":>11} '
        f'{"MFU":>7} {"compile+1st s":>13}')
  for n in counts:
    result = _subprocess(n, args)
    for phase, r in result['phases'].items():
      rows.append({'devices': n, 'phase': phase, **r,
                   'matmul_peak_flops_per_s':
                       result['matmul_peak_flops_per_s'],
                   'device_kind': result['device_kind']})
      mfu = f'{100 * r["mfu"]:6.2f}%' if 'mfu' in r else '      -'
      print(f'{n:>7} {phase:<15} {r["steps_per_s"]:>9.2f} '
            f'{r["tokens_per_s"]:>11.0f} {mfu} {r["first_chunk_s"]:>13.1f}',
            flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, 'w') as f:
    json.dump({'config_file': _CONFIG_FILE.value, 'preset': preset,
               'dtype': _DTYPE.value, 'batch_size': _BATCH.value,
               'rows': rows}, f, indent=2)
  print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  app.run(main)
