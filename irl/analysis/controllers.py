"""The ground-truth controllers (docs/method.md §5): one linear edit of the
residual stream per subgoal, trained on expert data of the pretraining tasks
with the base model frozen.

One controller per ground-truth subgoal: the metacontroller's decoder
(`ControllerDecoder`, the hypernetwork z -> U) with β ≡ 1 and z = one-hot(g),
g the subgoal (colour pair) being pursued. At every step t the controller of
the true label edits the residual stream at layer l, e_l <- e_l + U_{g_t} e_l
(`BaseModel.lower` / `upper` with an intervention pytree), and the decoder
alone is trained on next-action NLL of ε = 0 expert data (D*); the base model
is frozen (its parameters are an argument of the jitted step, never in the
optimiser state). `irl.analysis.control_rollouts` runs them in closed loop;
`irl.analysis.controllability` is the Fig. 4 job.

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
"""


from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax

from irl import config as config_lib
from irl import optim
from irl.analysis import probes
from irl.config import Config
from irl.data import stream
from irl.models import BaseModel, ControllerDecoder, Intervention
from irl.train import loop
from irl.train import losses
from irl.train import pretrain
from irl.utils import metrics as metrics_lib
from irl.utils import parallel


# ----------------------------------------------------------------------------
# Training.


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
  init: Callable[[jax.Array], loop.TrainState]
  # (state, base params, pool or None) -> (state, mean metrics over the
  # chunk); None draws fresh D* episodes in every step.
  train_chunk: Callable[..., tuple[loop.TrainState, dict]]
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


def make_control_trainer(config: Config, layer: int) -> ControlTrainer:
  """Pure training functions for controllers at `layer`, shared (with their
  compilations) between calls with equal configs."""
  config = config_lib.build(config)
  return _make_control_trainer(config_lib.factory_key(
      config, drop=[f'control.{name}' for name in (
          'layers', 'depths', 'depth_pretrain_steps', 'num_episodes',
          'temperature')]), int(layer))


@functools.lru_cache(maxsize=16)
def _make_control_trainer(config: Config, layer: int) -> ControlTrainer:
  cc = config.control
  model = BaseModel(pretrain.model_config(config))
  if not 0 <= layer <= model.config.num_layers:
    raise ValueError(f'layer={layer} must be in [0, '
                     f'{model.config.num_layers}] (model.num_layers)')
  k = config_lib.num_subgoals(config)
  decoder = ControllerDecoder(width=model.config.width,
                              rank=cc.rank or None, hidden=cc.decoder_hidden)
  tx = optim.section_optimizer(cc, cc.num_steps, grad_clip=0.0)
  sample = stream.stream_from_config(config, 'expert',
                                     batch_size=cc.batch_size, jit=False)

  def init(key: jax.Array) -> loop.TrainState:
    k_params, k_data = jax.random.split(key)
    params = decoder.init(k_params, jnp.zeros((1, k)))
    return loop.TrainState(step=jnp.int32(0), params=params,
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
    return nll, {'action_nll': nll,
                 **losses.action_fit(out, actions, valid)}

  def lower(base_params, obs):
    e, _, _ = model.apply(base_params, obs, layer, method=BaseModel.lower)
    return e

  def one_step(base_params, pool, state: loop.TrainState, _):
    key, k_data = jax.random.split(state.key)
    if pool is None:
      batch = sample(k_data)
      data = (lower(base_params, batch.obs), batch.actions, batch.subgoal,
              batch.valid)
    else:
      idx = jax.random.choice(k_data, pool.valid.shape[0], (cc.batch_size,),
                              replace=False)
      data = parallel.shard_batch((pool.residual[idx], pool.actions[idx],
                                   pool.subgoal[idx], pool.valid[idx]))
    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params,
                                                     base_params, *data)
    metrics['grad_norm'] = optax.tree.norm(grads)
    return state.apply_gradients(tx, grads, key=key), metrics

  @jax.jit
  def train_chunk(state: loop.TrainState, base_params, pool=None):
    return loop.scan_steps(functools.partial(one_step, base_params, pool),
                           state, cc.log_every)

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
      for fit, value in losses.action_fit(o, batch.actions,
                                          batch.valid).items():
        out[f'{name}_{fit}'] = value
    return out

  def heldout(params, base_params, key):
    return heldout_metrics(params, base_params, heldout_sample(key))

  return ControlTrainer(model=model, decoder=decoder, layer=layer, init=init,
                        train_chunk=train_chunk, collect=collect,
                        heldout=heldout)


def train_controllers(config: Config, base_params: Any,
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
    for name, v in parallel.to_host(trainer.heldout(state.params, base_params,
                                                  k)).items():
      totals[name] = totals.get(name, 0.0) + float(v) / cc.eval_batches
  return state.params, {'train_nll': history, 'train_seconds': train_seconds,
                        **{f'heldout/{k}': v for k, v in totals.items()}}


