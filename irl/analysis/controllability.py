"""Linear controllability of the residual stream (docs/method.md §5, Fig. 4).

One controller per ground-truth subgoal: the metacontroller's decoder
(`ControllerDecoder`, the hypernetwork z -> U) with β ≡ 1 and z = one-hot(g),
g the subgoal (colour pair) being pursued. At every step t the controller of
the true label edits the residual stream at layer l, e_l <- e_l + U_{g_t} e_l
(`BaseModel.lower` / `upper` with an intervention pytree), and the decoder alone is
trained on next-action NLL of ε = 0 expert data (D*); the base model is frozen
(its parameters are an argument of the jitted step, never in the optimiser
state).

Evaluation is closed-loop on the post-training task (config `env.post_task`,
0-1-2-3-4-5-6-7-0-1-2-3): the base model samples actions with its decoding
cache while the controller of the current pair is applied, switching to the
next pair's controller when the environment's `task_pos` crosses a multiple of
`subgoal_size`. The base model alone (no controller) is run on the same
episodes for reference.

`run(config, workdir)` is the job behind experiments/controllability.py: a
sweep over controlled layers l = 0..L and base-model depths (depth variants
are pretrained into `<workdir>/depth_<L>/`), resumable per (depth, layer),
writing JSON, CSV and the Fig. 4 heat map under `<workdir>/control/`.

Layer l = L is in the sweep: there the edit acts on the last residual, just
before the final norm and the output heads, so it re-maps the model's readout
per subgoal rather than steering computation that later blocks still do; it is
the reference point against which "mid-depth is best" is read. Layer 0 edits
the observation embedding.

Choices where the paper is silent:
- z = one-hot over the K = 4 pairs, decoded by the metacontroller's
  hypernetwork (hidden 32, rank 16); the K controllers are decoded once per
  step of training and gathered by label, which equals decoding one-hot(g_t)
  at every step. Training applies them with `SubgoalControllers`, the same
  edit as the gathered `Intervention` (tested) at a quarter of the cost;
  held-out NLL and rollouts use the gathered `Intervention`.
- Training data: D* on the pretraining tasks (the post-training task is never
  seen). `control.pool_episodes > 0` trains on a fixed pool of D* episodes
  with their clean e_l cached (the lower half runs once per layer), which is
  what makes the CPU preset affordable; 0 draws fresh episodes every step.
- Rollouts sample at temperature `control.temperature` (1.0); the base model
  alone and every controlled layer see the same layouts and sampling keys.
  Once the last pair is complete the episode is over (success), so the
  "stay on the last controller" rule never acts.
- Depth sweep: the main model (`model.num_layers`) is the finished run in the
  workdir; other depths are pretrained (by `irl.pipeline.
  pretrain_depth_variants`, which experiments/controllability.py calls) for
  `control.depth_pretrain_steps` steps with otherwise the same config
  (shorter on the CPU preset, so depth and training length are confounded
  there).
"""

from __future__ import annotations

import copy
import csv
import functools
import json
import os
import time
from typing import Any, Callable, NamedTuple, Sequence

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from irl import acting
from irl import config as config_lib
from irl import optim
from irl.analysis import probes
from irl.data import stream
from irl.envs import registry
from irl.envs import tasks as tasks_lib
from irl.models import BaseModel, ControllerDecoder, Intervention, init_cache
from irl.train import loop
from irl.train import losses
from irl.train import pretrain
from irl.utils import config_utils
from irl.utils import checkpoint as ckpt_lib
from irl.utils import metrics as metrics_lib
from irl.utils import progress as progress_lib
from irl.utils.config_utils import check, check_int, check_range

# Config fields that decide what a stored per-layer result means.
RESULT_KEYS = ('seed', 'env', 'data.seq_len', 'control.rank',
               'control.decoder_hidden', 'control.num_steps',
               'control.batch_size', 'control.learning_rate',
               'control.weight_decay', 'control.lr_schedule',
               'control.lr_warmup_steps', 'control.lr_decay_steps',
               'control.num_episodes',
               'control.temperature', 'control.eval_batches',
               'control.pool_episodes')


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ConfigError naming the first bad `control.*` field."""
  config_lib.validate_gridworld(config)
  c = config.control
  for name in ('num_steps', 'batch_size', 'log_every', 'num_episodes',
               'eval_batches'):
    check_int(c[name], f'control.{name}', minimum=1)
  check_int(c.rank, 'control.rank', minimum=0)
  check_int(c.decoder_hidden, 'control.decoder_hidden', minimum=0)
  check_int(c.depth_pretrain_steps, 'control.depth_pretrain_steps', minimum=0)
  check_int(c.pool_episodes, 'control.pool_episodes', minimum=0)
  if c.pool_episodes:
    check(c.pool_episodes >= c.batch_size, 'control.pool_episodes',
          f'{c.pool_episodes} must be 0 (fresh data) or >= control.batch_size='
          f'{c.batch_size}')
  check(c.num_steps % c.log_every == 0, 'control.num_steps',
        f'{c.num_steps} must be a multiple of control.log_every='
        f'{c.log_every}')
  check_range(c.learning_rate, 'control.learning_rate', 0.0, None,
              lo_inclusive=False)
  optim.validate_schedule(c, 'control', c.num_steps)
  check_range(c.weight_decay, 'control.weight_decay', 0.0)
  check_range(c.temperature, 'control.temperature', 0.0, None,
              lo_inclusive=False)
  check(c.rank <= config.model.width, 'control.rank',
        f'{c.rank} must be <= model.width={config.model.width}')
  check(len(c.depths) > 0, 'control.depths', 'must list at least one depth')
  for i, d in enumerate(c.depths):
    check_int(d, f'control.depths[{i}]', minimum=1)
  for i, l in enumerate(c.layers):
    check_int(l, f'control.layers[{i}]', minimum=0)
    check(l <= max(c.depths) or l <= config.model.num_layers,
          f'control.layers[{i}]',
          f'{l} exceeds every base-model depth (model.num_layers='
          f'{config.model.num_layers}, control.depths={list(c.depths)})')
  pairs = post_task_pairs(config)
  check(max(pairs) < probes.num_subgoals(config), 'env.post_task',
        f'its pairs {pairs} need subgoal ids < {probes.num_subgoals(config)}')
  if c.depth_pretrain_steps:
    check(c.depth_pretrain_steps % config.pretrain.log_every == 0,
          'control.depth_pretrain_steps',
          f'{c.depth_pretrain_steps} must be a multiple of '
          f'pretrain.log_every={config.pretrain.log_every}')
  return config


def post_task_pairs(config: ml_collections.ConfigDict) -> list[int]:
  """Subgoal ids of the post-training task in order: [0, 1, 2, 3, 0, 1]."""
  task = tasks_lib.parse_task(config.env.post_task)
  size = config.env.subgoal_size
  return [task[i] // size for i in range(0, len(task), size)]


def controller_index(task_pos: jax.Array, pairs: jax.Array,
                     subgoal_size: int) -> jax.Array:
  """The controller to apply: the pair whose colours are being visited.

  Args:
    task_pos: [...] int32 colours of the task done so far.
    pairs: [P] int32 subgoal id of each pair of the task.
    subgoal_size: colours per pair.

  Returns:
    [...] int32 subgoal id (the last pair's once the task is done).
  """
  pair = jnp.minimum(task_pos // subgoal_size, pairs.shape[0] - 1)
  return pairs[pair]


def seen_successors(pretrain_tasks: Sequence[Sequence[int]], size: int
                    ) -> dict[int, set[int]]:
  """Pair id -> the pair ids that follow it somewhere in pretraining."""
  out: dict[int, set[int]] = {}
  for task in pretrain_tasks:
    pairs = [task[i] // size for i in range(0, len(task), size)]
    for a, b in zip(pairs, pairs[1:]):
      out.setdefault(a, set()).add(b)
  return out


def pair_pass_rates(histogram: Sequence[int]) -> list[float]:
  """P(pair k+1 completed | k pairs completed) for k = 0..P-1, from the
  histogram of completed pairs [P + 1] (nan where no episode got that far)."""
  h = np.asarray(histogram, np.float64)
  reached = h[::-1].cumsum()[::-1]          # episodes completing >= k pairs
  return [float(reached[k + 1] / reached[k]) if reached[k] else float('nan')
          for k in range(len(h) - 1)]


FAILURE_KINDS = ('start', 'within_pair', 'boundary_prior', 'boundary_other',
                 'timeout')


def failure_kinds(visits: np.ndarray, task: Sequence[int],
                  pretrain_tasks: Sequence[Sequence[int]], size: int
                  ) -> dict[str, int]:
  """Where and how the failed episodes of a post-task rollout ended.

  Args:
    visits: [E, V] visited colours (-1 padded) under the terminating rules,
      so a failed episode's last visit is the wrong colour.
    task: the post-training task's colours; pretrain_tasks: the pretraining
      table; size: colours per pair.

  Returns counts of failed episodes by kind: `start` (a wrong first colour),
  `within_pair` (a wrong colour between a pair's two), `boundary_prior` (right
  after a pair, the first colour of a pair that follows it in pretraining:
  the base model's prior won), `boundary_other` (another wrong colour after a
  pair), `timeout` (no wrong colour; T ran out).
  """
  follows = seen_successors(pretrain_tasks, size)
  counts = dict.fromkeys(FAILURE_KINDS, 0)
  for row in np.asarray(visits):
    pos = 0
    while pos < len(task) and pos < len(row) and row[pos] == task[pos]:
      pos += 1
    if pos >= len(task):
      continue                                   # success
    wrong = int(row[pos]) if pos < len(row) else -1
    if wrong < 0:
      kind = 'timeout'
    elif pos == 0:
      kind = 'start'
    elif pos % size:
      kind = 'within_pair'
    else:
      prior = {p * size for p in follows.get(task[pos - 1] // size, ())}
      kind = 'boundary_prior' if wrong in prior else 'boundary_other'
    counts[kind] += 1
  return counts


# ----------------------------------------------------------------------------
# Training.


@flax.struct.dataclass
class ControlState:
  step: jax.Array   # [] int32
  params: Any       # ControllerDecoder parameters
  opt_state: Any
  key: jax.Array


@flax.struct.dataclass
class ControlPool:
  """A fixed set of D* episodes with the frozen model's clean stream e_l.

  Attributes:
    residual: [N, T, W] e_l = lower(obs, l), what the controller edits.
    actions: [N, T] int32 expert actions.
    subgoal: [N, T] int32 subgoal ids (-1 on invalid steps).
    valid: [N, T] bool.
  """
  residual: jax.Array
  actions: jax.Array
  subgoal: jax.Array
  valid: jax.Array


class ControlTrainer(NamedTuple):
  model: BaseModel
  decoder: ControllerDecoder
  layer: int
  init: Callable[[jax.Array], ControlState]
  # (state, base params, pool or None) -> (state, mean metrics over the
  # chunk); None draws fresh D* episodes in every step.
  train_chunk: Callable[..., tuple[ControlState, dict]]
  # (base params, key, num_episodes) -> ControlPool.
  collect: Callable[[Any, jax.Array, int], ControlPool]
  # (decoder params, base params, key) -> held-out NLL / accuracy, with
  # and without the controllers, on one fresh D* batch.
  heldout: Callable[[Any, Any, jax.Array], dict]


def controller_factors(decoder: ControllerDecoder, params: Any,
                       num_subgoals: int) -> tuple[jax.Array, ...]:
  """The K controllers: decoder(one-hot(k)) for k < K, each [K, n_e, r]."""
  return decoder.apply(params, jnp.eye(num_subgoals))


@flax.struct.dataclass
class SubgoalControllers:
  """e_l <- e_l + U_{g_t} e_l with one low-rank controller per subgoal.

  The same edit as `Intervention.low_rank(layer, a[subgoal], b[subgoal])`
  (see `to_intervention`), computed without materialising per-step factors
  [B, T, n_e, r]: the coefficients B_k^T e of all K controllers are computed
  and the true subgoal's are kept, about 4x cheaper in training on a CPU than
  gathering the factors (whose gradient is a scatter-add). `BaseModel.upper`
  reads only `layer` and `apply`, so it takes either form.

  Attributes:
    layer: residual index to edit (static).
    a, b: [K, n_e, r] factors of the K controllers (U_k = A_k B_k^T).
    subgoal: [B, T] int32 subgoal of every step (-1: controller 0).
  """
  layer: int = flax.struct.field(pytree_node=False)
  a: jax.Array
  b: jax.Array
  subgoal: jax.Array

  def apply(self, e: jax.Array) -> jax.Array:
    """e: [B, T, n_e] -> e + U_{g_t} e."""
    onehot = jax.nn.one_hot(jnp.maximum(self.subgoal, 0), self.a.shape[0],
                            dtype=self.b.dtype)
    coeff = jnp.einsum('...i,kir->...kr', e, self.b) * onehot[..., None]
    return e + jnp.einsum('...kr,kir->...i', coeff, self.a).astype(e.dtype)

  def to_intervention(self):
    idx = jnp.maximum(self.subgoal, 0)
    return Intervention.low_rank(self.layer, self.a[idx], self.b[idx])


def controlled_forward(model: BaseModel, base_params: Any,
                       decoder: ControllerDecoder,
                       factors: tuple[jax.Array, ...] | None, layer: int,
                       obs: jax.Array, subgoal: jax.Array, cache=None):
  """The base model with the controller of `subgoal` [B, T] applied at `layer`.

  `factors` from `controller_factors` ([K, ...] each); a per-step gather of
  them equals decoding one-hot(subgoal) at every step. None: no controller.
  Invalid labels (-1) use controller 0 (their steps are masked anyway).
  """
  if factors is None:
    return model.apply(base_params, obs, cache=cache)
  e, _, cache = model.apply(base_params, obs, layer, cache,
                            method=BaseModel.lower)
  idx = jnp.maximum(subgoal, 0)
  iv = decoder.as_intervention(layer, tuple(f[idx] for f in factors))
  return model.apply(base_params, e, layer, iv, cache, method=BaseModel.upper)


def make_control_trainer(config: ml_collections.ConfigDict,
                         layer: int) -> ControlTrainer:
  """Pure training functions for controllers at `layer`, shared (with their
  compilations) between calls with equal configs."""
  validate(config)
  key = config.copy_and_resolve_references()
  key.unlock()   # configs from absl flags are locked
  # Fields that do not enter the jitted functions.
  for name in ('layers', 'depths', 'depth_pretrain_steps', 'num_episodes',
               'temperature'):
    del key.control[name]
  return _make_control_trainer(key.to_json(sort_keys=True), int(layer))


@functools.lru_cache(maxsize=16)
def _make_control_trainer(config_json: str, layer: int) -> ControlTrainer:
  config = ml_collections.ConfigDict(json.loads(config_json))
  cc = config.control
  model = BaseModel(pretrain.model_config(config))
  if not 0 <= layer <= model.config.num_layers:
    raise ValueError(f'layer={layer} must be in [0, '
                     f'{model.config.num_layers}] (model.num_layers)')
  k = probes.num_subgoals(config)
  decoder = ControllerDecoder(width=model.config.width,
                              rank=cc.rank or None, hidden=cc.decoder_hidden)
  tx = optim.section_optimizer(cc, cc.num_steps, grad_clip=0.0)
  sample = stream.stream_from_config(config, 'expert',
                                     batch_size=cc.batch_size, jit=False)

  def init(key: jax.Array) -> ControlState:
    k_params, k_data = jax.random.split(key)
    params = decoder.init(k_params, jnp.zeros((1, k)))
    return ControlState(step=jnp.int32(0), params=params,
                        opt_state=tx.init(params), key=k_data)

  def loss_fn(params, base_params, e, actions, subgoal, valid):
    factors = controller_factors(decoder, params, k)
    if decoder.rank is None:
      iv = decoder.as_intervention(
          layer, tuple(f[jnp.maximum(subgoal, 0)] for f in factors))
    else:
      iv = SubgoalControllers(layer, *factors, subgoal)
    out = model.apply(base_params, e, layer, iv, method=BaseModel.upper)
    nll = losses.masked_mean(losses.action_nll(out, actions), valid)
    acc = losses.masked_mean(
        (jnp.argmax(out.action_logits, -1) == actions).astype(jnp.float32),
        valid)
    return nll, {'action_nll': nll, 'action_acc': acc}

  def lower(base_params, obs):
    e, _, _ = model.apply(base_params, obs, layer, method=BaseModel.lower)
    return e

  def one_step(base_params, pool, state: ControlState, _):
    key, k_data = jax.random.split(state.key)
    if pool is None:
      batch = sample(k_data)
      data = (lower(base_params, batch.obs), batch.actions, batch.subgoal,
              batch.valid)
    else:
      idx = jax.random.choice(k_data, pool.valid.shape[0], (cc.batch_size,),
                              replace=False)
      data = (pool.residual[idx], pool.actions[idx], pool.subgoal[idx],
              pool.valid[idx])
    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params,
                                                     base_params, *data)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    metrics['grad_norm'] = optax.tree.norm(grads)
    return ControlState(step=state.step + 1,
                        params=optax.apply_updates(state.params, updates),
                        opt_state=opt_state, key=key), metrics

  @jax.jit
  def train_chunk(state: ControlState, base_params, pool=None):
    state, metrics = jax.lax.scan(
        functools.partial(one_step, base_params, pool), state, None,
        length=cc.log_every)
    return state, jax.tree.map(jnp.mean, metrics)

  pool_sample = probes.expert_sampler(config, 'expert', cc.batch_size)

  @jax.jit
  def pool_chunk(base_params, batch) -> ControlPool:
    return ControlPool(residual=lower(base_params, batch.obs),
                       actions=batch.actions, subgoal=batch.subgoal,
                       valid=batch.valid)

  def collect(base_params, key: jax.Array, num_episodes: int) -> ControlPool:
    chunks = -(-num_episodes // cc.batch_size)
    parts = [pool_chunk(base_params, pool_sample(k_))
             for k_ in jax.random.split(key, chunks)]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs)[:num_episodes],
                        *parts)

  heldout_sample = pool_sample

  @jax.jit
  def heldout_metrics(params, base_params, batch):
    out = {}
    factors = controller_factors(decoder, params, k)
    for name, f in (('controlled', factors), ('base', None)):
      o = controlled_forward(model, base_params, decoder, f, layer,
                             batch.obs, batch.subgoal)
      out[f'{name}_action_nll'] = losses.masked_mean(
          losses.action_nll(o, batch.actions), batch.valid)
      out[f'{name}_action_acc'] = losses.masked_mean(
          (jnp.argmax(o.action_logits, -1) == batch.actions
           ).astype(jnp.float32), batch.valid)
    return out

  def heldout(params, base_params, key):
    return heldout_metrics(params, base_params, heldout_sample(key))

  return ControlTrainer(model=model, decoder=decoder, layer=layer, init=init,
                        train_chunk=train_chunk, collect=collect,
                        heldout=heldout)


# ----------------------------------------------------------------------------
# Closed-loop evaluation.


def controlled_rollout(model: BaseModel, base_params: Any,
                       decoder: ControllerDecoder | None,
                       factors: tuple[jax.Array, ...] | None, layer: int,
                       env: registry.Environment, env_params: Any,
                       pairs: Sequence[int], key: jax.Array,
                       num_episodes: int, temperature: float = 1.0
                       ) -> dict[str, np.ndarray]:
  """Runs the (controlled) base model in the environment, with the cache.

  Before every step the controller of the current pair, `controller_index(
  task_pos)`, is applied at `layer`; `task_pos` is read from the
  environment's state (the colours of the task done so far). With
  `factors=None` the base model acts alone.

  Args:
    env: the environment; only its state's `task_pos` and `visits`, the
      reward and `done` are read, so a scripted environment can stand in
      for tests.

  Returns host arrays: success [E] bool, pairs_done [E] (completed pairs),
  visits [E, V] the colours visited (-1 padded; a failed episode's last is
  the wrong one), controller [E, T] the controller id applied at each step (-1 once the
  episode is done), task_pos [E, T] before each step, length [E].
  """
  num_steps = env_params.max_steps
  if model.config.backbone == 'transformer' and model.config.max_len < num_steps:
    raise ValueError(f'model.max_len={model.config.max_len} is shorter than '
                     f'the episode (env.max_steps={num_steps})')
  pairs = jnp.asarray(pairs, jnp.int32)
  run = _rollout_fn(model, decoder, layer, env, env_params, num_episodes,
                    float(temperature))
  return jax.device_get(run(base_params, factors, pairs, key))


@functools.lru_cache(maxsize=32)
def _rollout_fn(model, decoder, layer, env, env_params, num_episodes,
                temperature):
  size = env_params.subgoal_size
  env = env.batched(env_params)

  @jax.jit
  def run(base_params, factors, pairs, key):
    def policy(cache, obs, env_state, k):
      # The oracle: the controller of the pair the environment says is next.
      ctrl = controller_index(env_state.task_pos, pairs, size)
      out = controlled_forward(model, base_params, decoder, factors, layer,
                               obs[:, None], ctrl[:, None], cache)
      action, _ = acting.sample_actions(out.action_logits[:, 0], k,
                                        temperature)
      return action, out.cache, {'controller': ctrl,
                                 'task_pos': env_state.task_pos}

    k_reset, k_act = jax.random.split(key)
    state, obs = env.reset(k_reset, num_episodes)
    state, _, _, trace = acting.unroll(
        env, policy, state, obs, init_cache(model.config, num_episodes),
        k_act, env_params.max_steps)
    live = trace.live.T
    return {'success': (trace.reward > 0).any(0),
            'pairs_done': state.task_pos // size,
            'visits': state.visits,
            'length': live.sum(1),
            'controller': jnp.where(live, trace.extras['controller'].T, -1),
            'task_pos': trace.extras['task_pos'].T}

  return run


# ----------------------------------------------------------------------------
# The job: layer sweep x depth sweep, resumable.


def train_controllers(config: ml_collections.ConfigDict, base_params: Any,
                      layer: int, key: jax.Array,
                      writer: metrics_lib.MetricsWriter | None = None,
                      progress_desc: str = 'control'
                      ) -> tuple[Any, dict[str, Any]]:
  """Trains the K controllers at `layer`; returns (decoder params, metrics)."""
  cc = config.control
  trainer = make_control_trainer(config, layer)
  k_init, k_heldout, k_pool = jax.random.split(key, 3)
  state = trainer.init(k_init)
  pool = None
  if cc.pool_episodes:
    pool = trainer.collect(base_params, k_pool, cc.pool_episodes)
  history = []
  state, done = loop.run(
      lambda s: trainer.train_chunk(s, base_params, pool), state,
      num_steps=cc.num_steps, log_every=cc.log_every, desc=progress_desc,
      writer=writer, show=('action_nll', 'action_acc'),
      progress_fn=lambda step, m: history.append(float(m['action_nll'])))
  train_seconds = done.seconds
  totals: dict[str, float] = {}
  for k in jax.random.split(k_heldout, cc.eval_batches):
    for name, v in jax.device_get(trainer.heldout(state.params, base_params,
                                                  k)).items():
      totals[name] = totals.get(name, 0.0) + float(v) / cc.eval_batches
  return state.params, {'train_nll': history, 'train_seconds': train_seconds,
                        **{f'heldout/{k}': v for k, v in totals.items()}}


def evaluate_controllers(config: ml_collections.ConfigDict, base_params: Any,
                         layer: int, decoder_params: Any | None,
                         key: jax.Array) -> dict[str, Any]:
  """Post-task success with the controllers switched in order.

  `decoder_params=None` runs the base model alone: every controller is U = 0,
  the exact identity edit, so it shares the compiled rollout of `layer`.
  """
  cc = config.control
  trainer = make_control_trainer(config, layer)
  k = probes.num_subgoals(config)
  if decoder_params is None:
    shapes = jax.eval_shape(
        lambda: controller_factors(
            trainer.decoder, trainer.init(jax.random.key(0)).params, k))
    factors = tuple(jnp.zeros(x.shape, x.dtype) for x in shapes)
  else:
    factors = controller_factors(trainer.decoder, decoder_params, k)
  post = config_lib.env_params(config, post=True)
  roll = controlled_rollout(trainer.model, base_params, trainer.decoder,
                            factors, layer, registry.from_config(config),
                            post, post_task_pairs(config),
                            key, cc.num_episodes, cc.temperature)
  num_pairs = len(post_task_pairs(config))
  histogram = np.bincount(roll['pairs_done'], minlength=num_pairs + 1)
  return {
      'success': float(roll['success'].mean()),
      'mean_pairs_done': float(roll['pairs_done'].mean()),
      'pairs_done_histogram': histogram.tolist(),
      'pair_pass_rate': pair_pass_rates(histogram),
      'mean_length': float(roll['length'].mean()),
      'failures': failure_kinds(
          roll['visits'], tasks_lib.parse_task(config.env.post_task),
          config_lib.env_params(config).tasks,
          config.env.subgoal_size),
  }


def depth_config(config: ml_collections.ConfigDict, depth: int
                 ) -> ml_collections.ConfigDict:
  """The config of the depth-`depth` variant of the base model."""
  c = copy.deepcopy(config)
  if depth == config.model.num_layers:
    return c
  c.model.num_layers = depth
  if config.control.depth_pretrain_steps:
    c.pretrain.num_steps = config.control.depth_pretrain_steps
  return c


def depth_workdir(config: ml_collections.ConfigDict, workdir: str,
                  depth: int) -> str:
  if depth == config.model.num_layers:
    return workdir
  return os.path.join(workdir, f'depth_{depth}')


def base_model_params(config: ml_collections.ConfigDict, workdir: str,
                      depth: int) -> tuple[ml_collections.ConfigDict, Any]:
  """(config, params) of the depth-`depth` base model: the main model in
  `workdir`, another depth in `<workdir>/depth_<depth>/`
  (`irl.pipeline.pretrain_depth_variants` trains those)."""
  cfg = depth_config(config, depth)
  wd = depth_workdir(config, workdir, depth)
  if wd == workdir:
    return cfg, pretrain.load_pretrained(config, workdir, 'controllability')
  try:
    return cfg, pretrain.load_params(cfg, wd)
  except FileNotFoundError:
    raise ckpt_lib.MissingInputError(
        f'control.depths lists {depth}, but {wd} holds no depth-{depth} base '
        f'model of {cfg.pretrain.num_steps} steps: experiments/'
        'controllability.py pretrains it first (irl.pipeline.'
        'pretrain_depth_variants).') from None


def _result_fingerprint(config, depth: int) -> dict:
  fp = config_utils.config_fingerprint(config, RESULT_KEYS)
  cfg = depth_config(config, depth)
  fp['model'] = config_utils.to_jsonable(cfg.model)
  fp['pretrain_steps'] = int(cfg.pretrain.num_steps)
  return fp


def _load_if_done(path: str, fingerprint: dict) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    done = json.load(f)
  return done if done.get('fingerprint') == fingerprint else None


def _write_json(path: str, data: Any) -> None:
  config_utils.atomic_write_text(
      path, json.dumps(config_utils.to_jsonable(data, strict=False),
                       indent=1) + '\n')


def layers_of(config: ml_collections.ConfigDict, depth: int) -> list[int]:
  """Controlled layers at `depth`: `control.layers` (those <= depth) or 0..L."""
  if config.control.layers:
    return sorted({int(l) for l in config.control.layers if l <= depth})
  return list(range(depth + 1))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The controllability sweep; writes `<workdir>/control/`.

  Per depth L: `depth_<L>/base.json` (the base model alone) and
  `depth_<L>/layer_<l>.json` (+ `controllers_layer_<l>.msgpack`); a rerun
  skips every file already computed with the same config. Then
  `results.json`, `success.csv`, `fig4_controllability.png` (heat map depth x
  layer) and `success_by_layer.png` (the main depth).
  """
  validate(config)
  cc = config.control
  # Fail before any work if the main model is missing.
  pretrain.load_pretrained(config, workdir, 'controllability')
  out_dir = os.path.join(workdir, 'control')
  os.makedirs(out_dir, exist_ok=True)
  config_utils.save_config(config, out_dir)
  writer = metrics_lib.MetricsWriter(workdir, 'control')
  depths = sorted({int(d) for d in cc.depths})
  rows = []
  base_rows = []
  for depth in depths:
    cfg, params = base_model_params(config, workdir, depth)
    d_dir = os.path.join(out_dir, f'depth_{depth}')
    os.makedirs(d_dir, exist_ok=True)
    fingerprint = _result_fingerprint(config, depth)
    eval_key = jax.random.fold_in(jax.random.key(config.seed), 5_000)

    layers = layers_of(config, depth)
    base_path = os.path.join(d_dir, 'base.json')
    base = _load_if_done(base_path, fingerprint)
    if base is None:
      base = evaluate_controllers(cfg, params, layers[0], None, eval_key)
      base.update(depth=depth, fingerprint=fingerprint)
      _write_json(base_path, base)
    base_rows.append(base)
    logging.info('control: depth %d, base model alone: success %.3f',
                 depth, base['success'])

    with progress_lib.Progress(len(layers), desc=f'control depth {depth}',
                               log_every_secs=0.0) as bar:
      for i, layer in enumerate(layers):
        path = os.path.join(d_dir, f'layer_{layer}.json')
        done = _load_if_done(path, fingerprint)
        if done is None:
          t0 = time.time()
          name = f'control_depth{depth}_layer{layer}'
          run_writer = metrics_lib.MetricsWriter(workdir, name, resume_step=0)
          key = jax.random.fold_in(jax.random.key(config.seed),
                                   4_000 + 100 * depth + layer)
          dec_params, train_metrics = train_controllers(
              cfg, params, layer, key, writer=run_writer,
              progress_desc=f'control depth {depth} layer {layer}')
          run_writer.close()
          result = evaluate_controllers(cfg, params, layer, dec_params,
                                        eval_key)
          result.update(train_metrics)
          result.update(depth=depth, layer=layer, fingerprint=fingerprint,
                        base_success=base['success'],
                        seconds=time.time() - t0)
          with open(os.path.join(d_dir, f'controllers_layer_{layer}.msgpack'),
                    'wb') as f:
            f.write(flax.serialization.to_bytes(dec_params))
          _write_json(path, result)
          writer.write_scalars(100 * depth + layer, {
              'depth': depth, 'layer': layer, 'success': result['success'],
              'mean_pairs_done': result['mean_pairs_done'],
              'heldout_action_nll': result['heldout/controlled_action_nll']})
          done = result
        rows.append(done)
        bar.update(i + 1, {'layer': layer, 'success': done['success']})
  summary = summarize(config, rows, base_rows)
  _write_json(os.path.join(out_dir, 'results.json'),
              {'layers': rows, 'base': base_rows, 'summary': summary})
  write_csv(rows, base_rows, out_dir)
  plot_heatmap(os.path.join(out_dir, 'fig4_controllability.png'), rows,
               base_rows)
  main_rows = [r for r in rows if r['depth'] == config.model.num_layers]
  main_base = [b for b in base_rows if b['depth'] == config.model.num_layers]
  if main_rows:
    plot_success_by_layer(os.path.join(out_dir, 'success_by_layer.png'),
                          main_rows, main_base[0]['success'])
  writer.write_summary(summary)
  writer.close()
  return summary


def summarize(config, rows: list[dict], base_rows: list[dict]) -> dict:
  """Success by (depth, layer), the base model's, and the L/2 headline."""
  out: dict[str, Any] = {'success': {}, 'base_success': {}}
  for b in base_rows:
    out['base_success'][str(b['depth'])] = b['success']
  for r in rows:
    out['success'].setdefault(str(r['depth']), {})[str(r['layer'])] = (
        r['success'])
  depth = config.model.num_layers
  mid = out['success'].get(str(depth), {}).get(str(depth // 2))
  if mid is not None:
    out['main_depth'] = depth
    out['mid_layer'] = depth // 2
    out['mid_layer_success'] = mid
  return out


def write_csv(rows: list[dict], base_rows: list[dict], out_dir: str) -> None:
  base = {b['depth']: b['success'] for b in base_rows}
  with open(os.path.join(out_dir, 'success.csv'), 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['depth', 'layer', 'success', 'mean_pairs_done',
                'heldout_controlled_action_nll', 'heldout_base_action_nll',
                'base_success'])
    for r in rows:
      w.writerow([r['depth'], r['layer'], r['success'], r['mean_pairs_done'],
                  r['heldout/controlled_action_nll'],
                  r['heldout/base_action_nll'], base[r['depth']]])


# ----------------------------------------------------------------------------
# Figures.


def plot_heatmap(path: str, rows: list[dict], base_rows: list[dict]) -> str:
  """Fig. 4: post-task success, base-model depth x controlled layer, with the
  base model alone ('none') in the first column."""
  from irl.analysis.figures import plt, save_figure  # Agg; only to draw
  depths = sorted({r['depth'] for r in rows} | {b['depth'] for b in base_rows})
  max_layer = max([r['layer'] for r in rows] + [0])
  grid = np.full((len(depths), max_layer + 2), np.nan)
  for b in base_rows:
    grid[depths.index(b['depth']), 0] = b['success']
  for r in rows:
    grid[depths.index(r['depth']), r['layer'] + 1] = r['success']
  fig, ax = plt.subplots(figsize=(1.2 + 0.55 * grid.shape[1],
                                  1.2 + 0.5 * len(depths)))
  cmap = plt.get_cmap('viridis').with_extremes(bad='#dddddd')
  im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1,
                 aspect='auto', origin='lower')
  for (i, j), v in np.ndenumerate(grid):
    if not np.isnan(v):
      ax.text(j, i, f'{v:.2f}', ha='center', va='center', fontsize=6,
              color='white' if v < 0.6 else 'black')
  ax.set_xticks(range(grid.shape[1]))
  ax.set_xticklabels(['none'] + [str(l) for l in range(max_layer + 1)])
  ax.set_yticks(range(len(depths)))
  ax.set_yticklabels([str(d) for d in depths])
  ax.set_xlabel('controlled layer l')
  ax.set_ylabel('base-model depth L')
  ax.set_title('Post-task success with ground-truth controllers', fontsize=8)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  fig.tight_layout()
  return save_figure(fig, path, dpi=150)


def plot_success_by_layer(path: str, rows: list[dict],
                          base_success: float) -> str:
  from irl.analysis.figures import plt, save_figure  # Agg; only to draw
  rows = sorted(rows, key=lambda r: r['layer'])
  fig, ax = plt.subplots(figsize=(4.0, 3.0))
  ax.plot([r['layer'] for r in rows], [r['success'] for r in rows],
          marker='o', label='ground-truth controllers')
  ax.axhline(base_success, color='grey', ls='--', lw=1,
             label='base model alone')
  ax.set_xlabel('controlled layer l')
  ax.set_ylabel('post-task success')
  ax.set_ylim(0, 1)
  ax.set_xticks([r['layer'] for r in rows])
  ax.legend(fontsize=7)
  ax.set_title(f'Depth {rows[0]["depth"]}: success by controlled layer',
               fontsize=9)
  fig.tight_layout()
  return save_figure(fig, path, dpi=150)
