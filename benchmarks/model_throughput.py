r"""Base-model throughput: pretraining steps and decoding, against the matmul peak.

1. Matmul peak: the best f32 square matmul of the run (`jax.jit(a @ b)` and
   NumPy's BLAS, sizes `--peak_sizes`). The largest of these is the machine
   peak that every efficiency below is a fraction of. It is measured after
   the models (NumPy's BLAS threads spin on after a call and slowed the
   step timed next).
2. Pretraining: the real step (BaseModel -> `losses.pretrain_loss` -> AdamW of
   `optim.section_optimizer`, config values of `configs/gridworld.py`) on a
   fixed synthetic batch of one-hot observations, so the expert-data stream is
   not timed (benchmarks/env_throughput.py times it). Models: the gridworld
   Transformer of the `cpu` and `paper` presets, and the Hawk of the ant preset
   (width 256, 8 layers, 8 heads; on gridworld observations and actions).
   FLOPs are counted analytically (the table's numbers) and by XLA's
   `cost_analysis()` (recorded too):
     train FLOPs = tokens x [6 (L P_block + P_heads) + 4 P_enc + 12 L S W]
   with P_block the matmul parameters of a block (Transformer 4W² + 2WF, Hawk
   3W² + 2W²/H + 2WF), P_heads = W (num_actions + obs_dim; obs_dim only where
   the config's λ > 0: the `cpu` preset's λ = 0 drops the head), P_enc = (encoder
   input) x W (no input gradient, hence 4 not 6; the egocentric encoder sums
   one gathered kernel row per object, so its input counts C − 1), and
   12 L S W the attention scores and mixing over the full S x S square (fwd
   4SW per token, x3 for the backward; Transformer only). Biases, norms,
   softmax, the RG-LRU scan and the optimiser are not counted.
   `matmul floor` runs only the step's dot shapes (forward, input- and
   weight-gradient of every dense layer and attention product, nothing else)
   in one program: the time the step would take if everything but the matmuls
   were free, i.e. what this XLA build's matmuls allow.
3. Decoding with the model in the loop: `--decode_envs` sequences advance one
   step at a time for `--decode_steps` steps; each step's observation depends
   on the previous step's greedy action, so steps cannot overlap. (a) cached:
   T=1 inputs and the KV cache, `lax.scan` over time; (b) recompute: a full
   forward over a fixed [B, decode_steps] buffer every step (future slots
   empty, causally masked), which costs the same at every t, so it is timed
   over `--recompute_steps` steps. Both read the same logits (checked).

Time is wall clock, best of `--repeats` steady-state calls (median recorded).
The machine is shared, so the CPU time of this process is recorded as well:
`cpu_s` (summed over threads) is what the work cost when it ran, independent
of time-slicing by other processes; `*_cpu` rates divide by cpu_s / cores.

Usage (from the repository root):
  python benchmarks/model_throughput.py                 # full run, minutes
  python benchmarks/model_throughput.py --quick         # smoke run, seconds
  python benchmarks/model_throughput.py --train_models=paper --sections=train
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
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
import numpy as np
import optax

from configs import gridworld as gridworld_configs
from irl import optim
from irl.models import BaseModel, ModelConfig, init_cache
from irl.models import presets as model_presets
from irl.models.flops import encoder_input_dim, train_flops
from irl.train import losses
from irl.train import pretrain
from irl.utils import machine as machine_lib

_SECTIONS = flags.DEFINE_list(
    'sections', ['peak', 'train', 'decode'], 'What to measure.')
_TRAIN_MODELS = flags.DEFINE_list(
    'train_models', ['cpu', 'paper', 'hawk'],
    'Pretraining models: gridworld presets (cpu, paper, test) and/or hawk '
    '(the ant preset).')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Sequences per training step.')
_SEQ = flags.DEFINE_integer('seq_len', 64, 'Steps per training sequence.')
_DECODE_MODELS = flags.DEFINE_list(
    'decode_models', ['cpu'], 'Gridworld presets to decode with.')
_DECODE_ENVS = flags.DEFINE_integer(
    'decode_envs', 1024, 'Sequences decoded in parallel.')
_DECODE_STEPS = flags.DEFINE_integer(
    'decode_steps', 100, 'Decoded steps T (<= the model max_len).')
_RECOMPUTE_STEPS = flags.DEFINE_integer(
    'recompute_steps', 2, 'Steps timed for the prefix-recompute baseline.')
_PEAK_SIZES = flags.DEFINE_list(
    'peak_sizes', ['1024', '2048'], 'Square matmul sizes for the peak.')
_REPEATS = flags.DEFINE_integer(
    'repeats', 3, 'Steady-state calls per measurement (best is reported).')
_OUT = flags.DEFINE_string(
    'out', 'benchmarks/results/model_throughput.json', 'JSON results path.')
_QUICK = flags.DEFINE_bool(
    'quick', False, 'Tiny sizes (a smoke run in seconds); flags given '
    'explicitly still win.')

_QUICK_DEFAULTS = dict(train_models=['test', 'hawk_test'], batch_size=4,
                       seq_len=16, decode_models=['test'], decode_envs=16,
                       decode_steps=12, recompute_steps=2, peak_sizes=['256'],
                       repeats=1)


def _jit(fn: Callable[..., Any]) -> Callable[..., Any]:
  """jax.jit; with --quick, without LLVM optimisation (compiles ~2x faster)."""
  if _QUICK.value:
    return jax.jit(fn, compiler_options={'xla_backend_optimization_level': 0})
  return jax.jit(fn)


def _flag(name: str) -> Any:
  """The flag's value, or its --quick default when --quick and not given."""
  if _QUICK.value and not flags.FLAGS[name].present and name in _QUICK_DEFAULTS:
    return _QUICK_DEFAULTS[name]
  return flags.FLAGS[name].value


# ----------------------------------------------------------------------------
# Timing.

def _cpu_seconds() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def _timed(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
  """Times fn() once (compile + run), then `repeats` steady-state calls."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  walls, cpus = [], []
  for _ in range(repeats):
    c0, t0 = _cpu_seconds(), time.perf_counter()
    jax.block_until_ready(fn())
    walls.append(time.perf_counter() - t0)
    cpus.append(_cpu_seconds() - c0)
  best = min(walls)
  return dict(first_s=first, best_s=best, median_s=statistics.median(walls),
              compile_s=max(first - best, 0.0), cpu_s=min(cpus), runs_s=walls)


def machine_info() -> dict[str, Any]:
  return machine_lib.machine_info(xla_flags=os.environ.get('XLA_FLAGS', ''))


# ----------------------------------------------------------------------------
# 1. Matmul peak.

def bench_peak(sizes: list[int], repeats: int) -> dict[str, Any]:
  rows = []
  matmul = _jit(lambda a, b: a @ b)
  for n in sizes:
    ka, kb = jax.random.split(jax.random.key(n))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    flops = 2 * n**3
    t = _timed(lambda: matmul(a, b), max(repeats, 3))
    rows.append(dict(impl='jax', n=n, flops_per_s=flops / t['best_s'],
                     flops_per_cpu_s=flops / t['cpu_s'], **t))
    a_np, b_np = np.asarray(a), np.asarray(b)
    t = _timed(lambda: a_np @ b_np, max(repeats, 3))
    rows.append(dict(impl='numpy', n=n, flops_per_s=flops / t['best_s'],
                     flops_per_cpu_s=flops / t['cpu_s'], **t))
    for r in rows[-2:]:
      print(f'  {r["impl"]:<6} {n:>5}^3  {r["flops_per_s"] / 1e9:7.1f} GFLOP/s'
            f'  ({r["flops_per_cpu_s"] / 1e9:6.1f} per CPU-second)', flush=True)
  best = max(rows, key=lambda r: r['flops_per_s'])
  best_cpu = max(rows, key=lambda r: r['flops_per_cpu_s'])
  return dict(rows=rows, peak_flops_per_s=best['flops_per_s'],
              peak_from=f'{best["impl"]} {best["n"]}',
              peak_flops_per_cpu_s=best_cpu['flops_per_cpu_s'])


# ----------------------------------------------------------------------------
# Models.

def gridworld_model_config(preset: str) -> tuple[ModelConfig, Any]:
  """The pretraining model and config of a configs/gridworld.py preset."""
  config = gridworld_configs.get_config(preset)
  return pretrain.model_config(config), config.pretrain


def hawk_model_config(preset: str) -> tuple[ModelConfig, Any]:
  """The Hawk of the ant preset, on gridworld observations and actions."""
  m = model_presets.hawk(preset)
  config = gridworld_configs.get_config('cpu')
  base = pretrain.model_config(config)
  cfg = ModelConfig(
      backbone='hawk', num_layers=m.num_layers, width=m.width,
      num_heads=m.num_heads, mlp_dim=m.mlp_dim, obs_dim=base.obs_dim,
      action_type='discrete', num_actions=base.num_actions,
      conv_width=m.conv_width, max_len=m.max_len, dtype=m.dtype,
      obs_encoder='linear')
  return cfg, config.pretrain


def model_for(name: str) -> tuple[ModelConfig, Any]:
  if name.startswith('hawk'):
    return hawk_model_config(name.partition('_')[2] or 'paper')
  return gridworld_model_config(name)


def synthetic_batch(key: jax.Array, cfg: ModelConfig, batch: int,
                    seq_len: int) -> dict[str, jax.Array]:
  """Random one-hot observations (one hot cell), actions, all steps valid."""
  k_obs, k_act = jax.random.split(key)
  idx = jax.random.randint(k_obs, (batch, seq_len + 1), 0, cfg.obs_dim)
  obs = jax.nn.one_hot(idx, cfg.obs_dim, dtype=jnp.float32)
  return dict(obs=obs[:, :-1], next_obs=obs[:, 1:],
              actions=jax.random.randint(k_act, (batch, seq_len), 0,
                                         cfg.num_actions),
              valid=jnp.ones((batch, seq_len), bool))


# ----------------------------------------------------------------------------
# 2. Pretraining step.

def make_train_step(cfg: ModelConfig, pc: Any):
  """jit((params, opt_state, batch) -> (params, opt_state, loss)), init."""
  model = BaseModel(cfg)
  tx = optim.section_optimizer(pc, pc.num_steps)

  def loss_fn(params, batch):
    out = model.apply(params, batch['obs'])
    return losses.pretrain_loss(out, batch['actions'], batch['next_obs'],
                                batch['valid'], pc.obs_loss_weight)

  @_jit
  def step(params, opt_state, batch):
    grads, metrics = jax.grad(loss_fn, has_aux=True)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics['loss']

  def init(key, batch):
    params = model.init(key, batch['obs'][:1])
    return params, tx.init(params)

  return step, init


def matmul_floor(cfg: ModelConfig, batch: int, seq_len: int,
                 obs_head: bool = True):
  """jit(operands -> scalar): only the dot products of one training step.

  Every dense layer x[M, K] @ w[K, N] contributes its forward, input-gradient
  (dy @ w^T, not for the encoder) and weight-gradient (x^T @ dy) dots; every
  attention layer its 2 forward and 4 backward batched [S, D] x [D, S]-sized
  products. Each result is reduced to one element, so nothing is dropped and
  almost nothing else is computed.
  """
  m, w, f, h = batch * seq_len, cfg.width, cfg.mlp_dim, cfg.num_heads
  outputs = (cfg.num_actions if cfg.action_type == 'discrete'
             else 2 * cfg.action_dim)
  dense = [(encoder_input_dim(cfg), w)]
  if cfg.backbone == 'transformer':
    dense += [(w, w)] * 4 * cfg.num_layers
  else:
    dense += [(w, w)] * 3 * cfg.num_layers
  dense += [(w, f), (f, w)] * cfg.num_layers + [(w, outputs)]
  if obs_head:
    dense.append((w, cfg.obs_dim))
  keys = iter(jax.random.split(jax.random.key(0), 4 * len(dense) + 64))
  normal = lambda *shape: jax.random.normal(next(keys), shape, jnp.float32)
  lin = [(normal(m, k), normal(k, n), normal(m, n)) for k, n in dense]
  att, gates = [], []
  if cfg.backbone == 'transformer':
    d = w // h
    att = [(normal(batch * h, seq_len, d), normal(batch * h, seq_len, d),
            normal(batch * h, seq_len, seq_len))
           for _ in range(cfg.num_layers)]
  else:
    blk = w // h
    gates = [(normal(m, h, blk), normal(h, blk, blk), normal(m, h, blk))
             for _ in range(2 * cfg.num_layers)]
  dot = lambda a, b, c, bd=((), ()): jax.lax.dot_general(a, b, (c, bd))

  def run(lin, att, gates):
    acc = jnp.zeros((), jnp.float32)
    first = lambda y: y.reshape(-1)[0]
    for i, (x, k, dy) in enumerate(lin):
      acc += first(x @ k) + first(dot(x, dy, ((0,), (0,))))
      if i:
        acc += first(dot(dy, k, ((1,), (1,))))
    for q, k, p in att:
      bd = ((0,), (0,))
      acc += (first(dot(q, k, ((2,), (2,)), bd))      # scores
              + first(dot(p, k, ((2,), (1,)), bd))    # mixing
              + first(dot(p, q, ((2,), (1,)), bd))    # d values
              + first(dot(p, k, ((1,), (1,)), bd))    # d probabilities
              + first(dot(p, q, ((1,), (1,)), bd))    # d keys
              + first(dot(p, k, ((2,), (1,)), bd)))   # d queries
    for x, k, dy in gates:
      bd = ((1,), (0,))
      acc += (first(dot(x, k, ((2,), (1,)), bd))
              + first(dot(dy, k, ((2,), (2,)), bd))
              + first(dot(x, dy, ((0,), (0,)), ((1,), (1,)))))
    return acc

  return _jit(run), (lin, att, gates)


def bench_train(names: list[str], batch: int, seq_len: int,
                repeats: int) -> dict[str, Any]:
  rows = []
  for name in names:
    cfg, pc = model_for(name)
    step, init = make_train_step(cfg, pc)
    data = synthetic_batch(jax.random.key(1), cfg, batch, seq_len)
    params, opt_state = init(jax.random.key(0), data)
    t = _timed(lambda: step(params, opt_state, data), repeats)
    compiled = step.lower(params, opt_state, data).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    obs_head = bool(pc.obs_loss_weight)   # λ = 0: the head is not computed
    floor_fn, floor_args = matmul_floor(cfg, batch, seq_len, obs_head)
    floor = _timed(lambda: floor_fn(*floor_args), repeats)
    del floor_args
    flops = train_flops(cfg, batch, seq_len, obs_head)
    tokens = batch * seq_len
    n_params = sum(x.size for x in jax.tree.leaves(params))
    cores = os.cpu_count() or 1
    row = dict(
        model=name, backbone=cfg.backbone, width=cfg.width,
        num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        mlp_dim=cfg.mlp_dim, obs_encoder=cfg.obs_encoder,
        encoder_input=encoder_input_dim(cfg), obs_head=obs_head,
        batch_size=batch,
        seq_len=seq_len, params=int(n_params), flops_analytic=flops,
        flops_xla=float(cost.get('flops', float('nan'))),
        bytes_xla=float(cost.get('bytes accessed', float('nan'))),
        tokens_per_s=tokens / t['best_s'], s_per_step=t['best_s'],
        flops_per_s=flops / t['best_s'],
        flops_per_s_cpu=flops / (t['cpu_s'] / cores),
        matmul_floor_s=floor['best_s'], matmul_floor_cpu_s=floor['cpu_s'],
        step=t, floor=floor)
    rows.append(row)
    print(f'  {name:<6} {cfg.backbone:<11} W={cfg.width:<4} L={cfg.num_layers}'
          f' {row["tokens_per_s"]:>9,.0f} tok/s  {t["best_s"]:7.3f} s/step'
          f'  {row["flops_per_s"] / 1e9:6.1f} GFLOP/s'
          f'  (matmul floor {floor["best_s"]:.3f} s)', flush=True)
  return dict(rows=rows)


def add_fractions_of_peak(train: dict[str, Any], peak: dict[str, Any]) -> None:
  """Adds frac_of_peak (wall clock) and frac_of_peak_cpu to every row."""
  for row in train['rows']:
    row['frac_of_peak'] = row['flops_per_s'] / peak['peak_flops_per_s']
    row['frac_of_peak_cpu'] = (row['flops_analytic'] / row['step']['cpu_s']
                               / peak['peak_flops_per_cpu_s'])


# ----------------------------------------------------------------------------
# 3. Decoding.

def make_decoders(cfg: ModelConfig, num_envs: int, num_steps: int):
  """(cached, recompute) jitted decoders: (params, idx[T, B]) -> logits."""
  model = BaseModel(cfg)

  def observe(idx_t, action):
    # The observation depends on the previous action: the model is in the loop.
    return jax.nn.one_hot((idx_t + action) % cfg.obs_dim, cfg.obs_dim,
                          dtype=jnp.float32)

  @_jit
  def cached(params, idx):
    def body(carry, idx_t):
      cache, action = carry
      out = model.apply(params, observe(idx_t, action)[:, None], cache=cache)
      logits = out.action_logits[:, 0]
      return (out.cache, jnp.argmax(logits, -1)), logits
    carry = (init_cache(cfg, num_envs), jnp.zeros((num_envs,), jnp.int32))
    _, logits = jax.lax.scan(body, carry, idx)
    return logits                                             # [T, B, A]

  @_jit
  def recompute(params, idx):
    def body(carry, inputs):
      buffer, action = carry
      t, idx_t = inputs
      buffer = jax.lax.dynamic_update_index_in_dim(
          buffer, observe(idx_t, action), t, axis=1)
      out = model.apply(params, buffer)
      logits = jax.lax.dynamic_index_in_dim(out.action_logits, t, axis=1,
                                            keepdims=False)
      return (buffer, jnp.argmax(logits, -1)), logits
    buffer = jnp.zeros((num_envs, num_steps, cfg.obs_dim), jnp.float32)
    carry = (buffer, jnp.zeros((num_envs,), jnp.int32))
    steps = jnp.arange(idx.shape[0])
    _, logits = jax.lax.scan(body, carry, (steps, idx))
    return logits

  return model, cached, recompute


def bench_decode(names: list[str], num_envs: int, num_steps: int,
                 recompute_steps: int, repeats: int) -> dict[str, Any]:
  rows = []
  for name in names:
    cfg, _ = gridworld_model_config(name)
    if num_steps > cfg.max_len:
      raise ValueError(f'decode_steps={num_steps} exceeds max_len='
                       f'{cfg.max_len} of the {name} model')
    model, cached, recompute = make_decoders(cfg, num_envs, num_steps)
    params = model.init(jax.random.key(0),
                        jnp.zeros((1, 1, cfg.obs_dim), jnp.float32))
    idx = jax.random.randint(jax.random.key(2), (num_steps, num_envs), 0,
                             cfg.obs_dim)
    n_re = min(recompute_steps, num_steps)
    t_cached = _timed(lambda: cached(params, idx), repeats)
    t_re = _timed(lambda: recompute(params, idx[:n_re]), repeats)
    diff = float(jnp.max(jnp.abs(cached(params, idx)[:n_re]
                                 - recompute(params, idx[:n_re]))))
    row = dict(model=name, width=cfg.width, num_layers=cfg.num_layers,
               num_envs=num_envs, num_steps=num_steps,
               recompute_steps=n_re, max_len=cfg.max_len,
               cached_steps_per_s=num_steps / t_cached['best_s'],
               recompute_steps_per_s=n_re / t_re['best_s'],
               max_abs_logit_diff=diff, cached=t_cached, recompute=t_re)
    row['speedup'] = row['cached_steps_per_s'] / row['recompute_steps_per_s']
    row['cached_env_steps_per_s'] = row['cached_steps_per_s'] * num_envs
    rows.append(row)
    print(f'  {name:<6} envs={num_envs} T={num_steps}: cached '
          f'{row["cached_steps_per_s"]:8.2f} steps/s, recompute '
          f'{row["recompute_steps_per_s"]:8.3f} steps/s, speedup '
          f'{row["speedup"]:6.1f}x (max |logit diff| {diff:.1e})', flush=True)
  return dict(rows=rows)


# ----------------------------------------------------------------------------
# Report.

def print_report(results: dict[str, Any]) -> None:
  m = results['machine']
  print('\n' + '=' * 96)
  print(f'CPU: {m["cpu_model"]} ({m["cpu_count"]} cores)  jax {m["jax_version"]}'
        f'  load avg {m.get("loadavg_start")} -> {m.get("loadavg_end")}')
  peak = results.get('peak')
  if peak:
    print(f'\nf32 matmul peak: {peak["peak_flops_per_s"] / 1e9:.1f} GFLOP/s '
          f'({peak["peak_from"]}); per CPU-second '
          f'{peak["peak_flops_per_cpu_s"] / 1e9:.1f}')
    for r in peak['rows']:
      print(f'  {r["impl"]:<6} {r["n"]:>5}^3 {r["flops_per_s"] / 1e9:8.1f} '
            f'GFLOP/s  per CPU-s {r["flops_per_cpu_s"] / 1e9:7.1f}')
  if 'train' in results:
    print(f'\nPretraining step (model + loss + AdamW, synthetic batch '
          f'{results["flags"]["batch_size"]}x{results["flags"]["seq_len"]})')
    print(f'{"model":<10} {"W/L/H/F":<14} {"tok/s":>9} {"s/step":>7} '
          f'{"GFLOP":>7} {"GFLOP/s":>8} {"%peak":>6} {"%peak cpu":>9} '
          f'{"floor s":>8} {"compile":>7}')
    for r in results['train']['rows']:
      arch = f'{r["width"]}/{r["num_layers"]}/{r["num_heads"]}/{r["mlp_dim"]}'
      pct = lambda k: f'{100 * r[k]:.1f}' if k in r else '-'
      print(f'{r["model"]:<10} {arch:<14} {r["tokens_per_s"]:>9,.0f} '
            f'{r["s_per_step"]:>7.3f} {r["flops_analytic"] / 1e9:>7.2f} '
            f'{r["flops_per_s"] / 1e9:>8.1f} {pct("frac_of_peak"):>6} '
            f'{pct("frac_of_peak_cpu"):>9} {r["matmul_floor_s"]:>8.3f} '
            f'{r["step"]["compile_s"]:>7.1f}')
  if 'decode' in results:
    print('\nDecoding with the model in the loop (greedy action -> next obs)')
    print(f'{"model":<8} {"envs":>6} {"T":>4} {"cached steps/s":>15} '
          f'{"env-steps/s":>12} {"recompute steps/s":>18} {"speedup":>8} '
          f'{"max|dlogit|":>11}')
    for r in results['decode']['rows']:
      print(f'{r["model"]:<8} {r["num_envs"]:>6} {r["num_steps"]:>4} '
            f'{r["cached_steps_per_s"]:>15.2f} '
            f'{r["cached_env_steps_per_s"]:>12,.0f} '
            f'{r["recompute_steps_per_s"]:>18.3f} {r["speedup"]:>7.1f}x '
            f'{r["max_abs_logit_diff"]:>11.1e}')
  print('=' * 96)


def main(argv):
  del argv
  sections = set(_SECTIONS.value)
  results: dict[str, Any] = dict(machine=machine_info(), flags=dict(
      quick=_QUICK.value, batch_size=_flag('batch_size'),
      seq_len=_flag('seq_len'), repeats=_flag('repeats'),
      decode_envs=_flag('decode_envs'), decode_steps=_flag('decode_steps'),
      recompute_steps=_flag('recompute_steps')))
  print(f'jax {jax.__version__} on {jax.default_backend()}: '
        f'{results["machine"]["cpu_model"]}', flush=True)
  repeats = _flag('repeats')
  if 'train' in sections:
    print('Pretraining step:', flush=True)
    results['train'] = bench_train(list(_flag('train_models')),
                                   _flag('batch_size'), _flag('seq_len'),
                                   repeats)
  if 'decode' in sections:
    print('Decoding:', flush=True)
    results['decode'] = bench_decode(
        list(_flag('decode_models')), _flag('decode_envs'),
        _flag('decode_steps'), _flag('recompute_steps'), repeats)
  # The peak goes last: NumPy's BLAS threads keep spinning for a while after
  # a call, and a model step timed right after them ran up to 1.9x slower.
  if 'peak' in sections:
    print('Matmul peak:', flush=True)
    results['peak'] = bench_peak([int(n) for n in _flag('peak_sizes')],
                                 repeats)
    if 'train' in results:
      add_fractions_of_peak(results['train'], results['peak'])
  if hasattr(os, 'getloadavg'):
    results['machine']['loadavg_end'] = os.getloadavg()
  print_report(results)
  out = pathlib.Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=2, default=float))
  print(f'Wrote {out}')


if __name__ == '__main__':
  app.run(main)
