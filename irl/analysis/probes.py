"""Linear subgoal probes on the residual stream (docs/method.md §5, Fig. 3 / A1).

For every residual index l = 0..L of a frozen, pretrained base model, a linear
probe p(g_t | e_{t,l}) = softmax(W_l e_{t,l} + b_l) predicts the subgoal g_t
(the colour pair being pursued at step t) from the stream. The L + 1 probes are
one pytree with a leading layer axis and train together in one jitted step
(`vmap` over layers, AdamW, cross-entropy over valid steps).

Data: expert episodes (config `probe.split`, D* by default) and their residuals
`BaseModel.apply(params, obs).residuals` [L+1, B, T, W]. Either every step draws
fresh episodes and runs the frozen model inside the jitted step
(`probe.pool_episodes = 0`, the paper's setting on an accelerator), or the
residuals of a fixed pool of episodes are computed once and batches are drawn
from it (`pool_episodes > 0`: a linear probe has (W+1)·K parameters per layer,
so a pool of a few thousand episodes does not overfit, and on a CPU the frozen
forward, not the probe, is the cost). Accuracy is measured on a separate
held-out set of episodes, beside the majority-class baseline, and as a function
of the step within the current subgoal segment.

`irl.analysis.fig3.run(config, workdir)` is the job behind
experiments/probe.py: it probes every kept pretraining checkpoint with
`train_probes`, skipping those already done, and writes JSON, CSV and the
Fig. 3 style figure under `<workdir>/probe/`.

Choices where the paper is silent:
- Label g_t: the pair whose colours the expert is heading for before step t
  (`Rollout.subgoal`, colour // 2 of the next colour of the task); steps after
  the episode ended are masked.
- Data: D* (ε = 0, the pretraining tasks) by default, `probe.split =
  'pretrain'` probes on D. Every checkpoint is probed on the same episodes.
- The probe has a bias (softmax(W_l e + b_l)); weights start at zero.
- `probe.standardize`: the probe reads each residual dimension standardised
  by its mean and std on the training episodes (`residual_stats`). This is a
  fixed affine reparametrisation of the same linear probe, so it changes the
  optimisation, not the family of probes: residual scales grow with depth,
  and raw residuals would let deeper probes converge faster within a fixed
  step budget.
- Majority-class baseline: the most frequent label of the probe's training
  data, scored on the held-out episodes (overall and per segment step).
- Accuracy vs time in a segment: bins of steps since the current pair began
  (0 = the first step after the previous pair was completed, or t = 0); the
  last bin collects every later step.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from irl import config as config_lib
from irl import optim
from irl.config import Config
from irl.data import stream
from irl.models import BaseModel
from irl.train import loop
from irl.train import pretrain
from irl.utils import config_utils
from irl.utils import metrics as metrics_lib
from irl.utils import parallel

def expert_sampler(config: Config, split: str,
                   batch_size: int) -> Callable[[jax.Array], stream.Rollout]:
  """A jitted `key -> Rollout` of expert episodes, shared (with its
  compilation) by every caller asking for the same data and batch size."""
  return _expert_sampler(
      config_lib.factory_key(config, sections=('env', 'data')), split,
      batch_size)


@functools.lru_cache(maxsize=8)
def _expert_sampler(config: Config, split: str,
                    batch_size: int):
  return stream.stream_from_config(config, split, batch_size=batch_size)


def segment_steps(subgoal_index: jax.Array) -> jax.Array:
  """[B, T] int32 steps since the current subgoal segment began (0 at its start).

  A segment starts at t = 0 and wherever `subgoal_index` [B, T] changes.
  """
  t = jnp.arange(subgoal_index.shape[-1], dtype=jnp.int32)
  changed = jnp.concatenate(
      [jnp.ones_like(subgoal_index[..., :1], bool),
       subgoal_index[..., 1:] != subgoal_index[..., :-1]], axis=-1)
  start = jax.lax.cummax(jnp.where(changed, t, 0), axis=subgoal_index.ndim - 1)
  return t - start


@flax.struct.dataclass
class ProbeData:
  """Residuals and labels of a set of episodes.

  Attributes:
    residuals: [L+1, N, T, W] float32 residual stream.
    subgoal: [N, T] int32 subgoal id g_t (-1 on invalid steps).
    segment_step: [N, T] int32 steps since the subgoal segment began.
    valid: [N, T] bool.
  """
  residuals: jax.Array
  subgoal: jax.Array
  segment_step: jax.Array
  valid: jax.Array


class ProbeTrainer(NamedTuple):
  model: BaseModel
  # (key, norm or None) -> loop.TrainState; None: no standardisation.
  init: Callable[..., loop.TrainState]
  # (state, source) -> (state, metrics); source: the base-model params (fresh
  # data) or a `ProbeData` pool.
  train_chunk: Callable[[loop.TrainState, Any], tuple[loop.TrainState, dict]]
  # (base params, key, num_episodes) -> ProbeData, in jitted chunks.
  collect: Callable[[Any, jax.Array, int], ProbeData]
  # (state, held-out ProbeData or an iterable of them) -> host metrics; the
  # majority class is the argmax of `state.label_counts`.
  evaluate: Callable[[loop.TrainState, Any], dict]
  # (base params, key, num_episodes) -> iterator of held-out ProbeData chunks.
  heldout_parts: Callable[[Any, jax.Array, int], Any]


def probe_logits(params: Any, residuals: jax.Array, norm: Any) -> jax.Array:
  """Probes of all layers at once: [L+1, ..., W] -> [L+1, ..., K]."""
  def one(p, e, n):
    e = (e.astype(jnp.float32) - n['shift']) / n['scale']
    return e @ p['w'] + p['b']
  return jax.vmap(one)(params, residuals, norm)


def identity_norm(num_residuals: int, width: int) -> dict:
  return {'shift': jnp.zeros((num_residuals, width)),
          'scale': jnp.ones((num_residuals, width))}


@jax.jit
def residual_stats(data: ProbeData) -> dict:
  """Per-layer, per-dimension mean and std of the valid steps of `data`.

  Residual scales grow with depth (e.g. RMS 0.2 at l = 0 to 0.65 at l = L in
  the CPU model), so without this the deeper probes would train faster and
  the comparison across layers would measure optimisation speed.
  """
  mask = data.valid.astype(jnp.float32)[None, ..., None]
  count = jnp.maximum(mask.sum((1, 2)), 1.0)
  mean = (data.residuals * mask).sum((1, 2)) / count
  var = (((data.residuals - mean[:, None, None]) ** 2) * mask).sum((1, 2)) / count
  return {'shift': mean, 'scale': jnp.sqrt(var) + 1e-6}


def probe_loss(params: Any, residuals: jax.Array, subgoal: jax.Array,
               valid: jax.Array, norm: Any) -> tuple[jax.Array, dict]:
  """Sum over layers of the mean cross-entropy over valid steps.

  Each layer's probe has its own parameters, so the sum trains every probe on
  its own loss. Returns (loss, {'loss': mean over layers, 'acc': [L+1]}).
  """
  logits = probe_logits(params, residuals, norm)               # [L+1,B,T,K]
  labels = jnp.maximum(subgoal, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.broadcast_to(labels, logits.shape[:-1]))
  mask = valid.astype(jnp.float32)
  denom = jnp.maximum(mask.sum(), 1.0)
  per_layer = (ce * mask).sum((-2, -1)) / denom                # [L+1]
  correct = (jnp.argmax(logits, -1) == labels) * mask
  acc = correct.sum((-2, -1)) / denom
  return per_layer.sum(), {'loss': per_layer.mean(), 'acc': acc}


def make_probe_trainer(config: Config) -> ProbeTrainer:
  """Pure probe functions for `config`, shared between equal configs."""
  config = config_lib.build(config)
  return _make_probe_trainer(config_lib.factory_key(config))


@functools.lru_cache(maxsize=4)
def _make_probe_trainer(config: Config) -> ProbeTrainer:
  pc = config.probe
  model = BaseModel(pretrain.model_config(config))
  mc = model.config
  k = config_lib.num_subgoals(config)
  tx = optim.section_optimizer(pc, pc.num_steps, grad_clip=0.0)
  train_sample = stream.stream_from_config(config, pc.split,
                                           batch_size=pc.batch_size, jit=False)

  def init(key: jax.Array, norm: Any = None) -> loop.TrainState:
    params = {'w': jnp.zeros((mc.num_layers + 1, mc.width, k)),
              'b': jnp.zeros((mc.num_layers + 1, k))}
    if norm is None:
      norm = identity_norm(mc.num_layers + 1, mc.width)
    # Extras: label_counts [K] float32, the labels seen in training (for the
    # majority class); norm, a fixed standardisation {'shift', 'scale'}
    # ([L+1, W] each): the probe reads (e - shift) / scale, an affine
    # reparametrisation of the same linear map.
    return loop.TrainState(step=jnp.int32(0), params=params,
                           opt_state=tx.init(params), key=key,
                           label_counts=jnp.zeros((k,)), norm=norm)

  def fresh_batch(base_params, key):
    batch = train_sample(key)
    residuals = model.apply(base_params, batch.obs).residuals
    return jax.lax.stop_gradient(residuals), batch.subgoal, batch.valid

  def pool_batch(pool: ProbeData, key):
    idx = jax.random.choice(key, pool.valid.shape[0], (pc.batch_size,),
                            replace=False)
    return (parallel.shard_batch(pool.residuals[:, idx], axis=1),
            *parallel.shard_batch((pool.subgoal[idx], pool.valid[idx])))

  def one_step(source, state: loop.TrainState, _):
    key, k_data = jax.random.split(state.key)
    get = pool_batch if isinstance(source, ProbeData) else fresh_batch
    residuals, subgoal, valid = get(source, k_data)
    grads, metrics = jax.grad(probe_loss, has_aux=True)(
        state.params, residuals, subgoal, valid, state.norm)
    counts = jnp.zeros((k,)).at[jnp.maximum(subgoal, 0)].add(
        valid.astype(jnp.float32))
    return state.apply_gradients(tx, grads, key=key,
                                 label_counts=state.label_counts + counts
                                 ), metrics

  @jax.jit
  def train_chunk(state: loop.TrainState, source) -> tuple[loop.TrainState, dict]:
    return loop.scan_steps(functools.partial(one_step, source), state,
                           pc.log_every)

  collect_sample = expert_sampler(config, pc.split, pc.eval_batch_size)

  @jax.jit
  def residuals_of(base_params, batch) -> ProbeData:
    residuals = model.apply(base_params, batch.obs).residuals
    return ProbeData(residuals=residuals.astype(jnp.float32),
                     subgoal=batch.subgoal,
                     segment_step=segment_steps(batch.subgoal_index),
                     valid=batch.valid)

  def collect_chunk(base_params, key):
    return residuals_of(base_params, collect_sample(key))

  def collect(base_params, key: jax.Array, num_episodes: int) -> ProbeData:
    chunks = -(-num_episodes // pc.eval_batch_size)
    parts = [collect_chunk(base_params, k_)
             for k_ in jax.random.split(key, chunks)]
    n = num_episodes
    return ProbeData(
        residuals=jnp.concatenate([p.residuals for p in parts], 1)[:, :n],
        subgoal=jnp.concatenate([p.subgoal for p in parts])[:n],
        segment_step=jnp.concatenate([p.segment_step for p in parts])[:n],
        valid=jnp.concatenate([p.valid for p in parts])[:n])

  @jax.jit
  def evaluate_sums(state: loop.TrainState, data: ProbeData) -> dict:
    label_counts = state.label_counts
    logits = probe_logits(state.params, data.residuals, state.norm)
    labels = jnp.maximum(data.subgoal, 0)
    mask = data.valid.astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32) * mask
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(labels, logits.shape[:-1])) * mask
    majority_hit = (labels == jnp.argmax(label_counts)) * mask
    # Steps at or beyond the last offset share its bin.
    bins = jnp.minimum(data.segment_step, pc.max_segment_step - 1)
    onehot = jax.nn.one_hot(bins, pc.max_segment_step) * mask[..., None]
    return {
        'count': mask.sum(),
        'correct': correct.sum((-2, -1)),                          # [L+1]
        'ce': ce.sum((-2, -1)),
        'majority_hit': majority_hit.sum(),
        'bin_count': onehot.sum((0, 1)),                           # [S]
        'correct_by_bin': jnp.einsum('lnt,nts->ls', correct, onehot),
        'majority_by_bin': jnp.einsum('nt,nts->s', majority_hit, onehot),
    }

  def evaluate(state: loop.TrainState, data) -> dict:
    parts = [data] if isinstance(data, ProbeData) else data
    sums = None
    for part in parts:
      s_ = parallel.to_host(evaluate_sums(state, part))
      sums = s_ if sums is None else jax.tree.map(np.add, sums, s_)
    count = max(float(sums['count']), 1.0)
    bins = np.maximum(sums['bin_count'], 1.0)
    return {
        'accuracy': sums['correct'] / count,
        'nll': sums['ce'] / count,
        'majority_class': int(np.argmax(jax.device_get(state.label_counts))),
        'majority_accuracy': float(sums['majority_hit']) / count,
        'accuracy_by_segment_step': sums['correct_by_bin'] / bins,
        'majority_by_segment_step': sums['majority_by_bin'] / bins,
        'count_by_segment_step': sums['bin_count'],
        'num_eval_steps': float(sums['count']),
    }

  def heldout_parts(base_params, key: jax.Array, num_episodes: int):
    """The held-out set in chunks (never all residuals in memory at once)."""
    chunks = -(-num_episodes // pc.eval_batch_size)
    for i, k_ in enumerate(jax.random.split(key, chunks)):
      part = collect_chunk(base_params, k_)
      # Episodes beyond num_episodes are masked (one shape, one compile).
      keep = (i * pc.eval_batch_size + jnp.arange(pc.eval_batch_size)
              < num_episodes)
      yield part.replace(valid=part.valid & keep[:, None])

  return ProbeTrainer(model=model, init=init, train_chunk=train_chunk,
                      collect=collect, evaluate=evaluate,
                      heldout_parts=heldout_parts)


def train_probes(config: Config, base_params: Any,
                 key: jax.Array, progress_desc: str = 'probe',
                 writer: metrics_lib.MetricsWriter | None = None,
                 heldout: Any = None) -> dict[str, Any]:
  """Trains the probes of every layer of one base model; returns the results.

  Args:
    config: the experiment config (its `probe` section).
    base_params: parameters of the frozen base model.
    key: PRNG key for the probes' data (pool and held-out episodes included).
    progress_desc: label of the progress output.
    writer: receives training metrics every `probe.log_every` steps.
    heldout: a held-out `ProbeData` or an iterable of them (else drawn from
      `key` in chunks of `probe.eval_batch_size` episodes).

  Returns:
    A JSON-able dict: per-layer held-out accuracy and NLL, the majority-class
    baseline, accuracy by step within the subgoal segment, training losses.
  """
  pc = config.probe
  trainer = make_probe_trainer(config)
  k_init, k_pool, k_heldout = jax.random.split(key, 3)
  source = base_params
  if pc.pool_episodes:
    source = trainer.collect(base_params, k_pool, pc.pool_episodes)
  norm = None
  if pc.standardize:
    # From the training pool, or from one chunk of fresh training episodes.
    norm = residual_stats(source if pc.pool_episodes else trainer.collect(
        base_params, k_pool, pc.eval_batch_size))
  state = trainer.init(k_init, norm)
  history = []
  state, done = loop.run(
      lambda s: trainer.train_chunk(s, source), state,
      num_steps=pc.num_steps, log_every=pc.log_every, desc=progress_desc,
      writer=writer, show=('loss',),
      scalars=lambda m, *_: {'loss': m['loss'], **{
          f'acc_layer{l}': a for l, a in enumerate(m['acc'])}},
      progress_fn=lambda step, m: history.append(float(m['loss'])))
  train_seconds = done.seconds
  if heldout is None:
    heldout = trainer.heldout_parts(base_params, k_heldout,
                                    pc.eval_episodes)
  out = config_utils.to_jsonable(trainer.evaluate(state, heldout))
  out.update(layers=list(range(len(out['accuracy']))),
             train_loss=history, train_seconds=train_seconds,
             num_steps=int(state.step),
             label_frequencies=config_utils.to_jsonable(
                 state.label_counts / state.label_counts.sum()))
  return out
