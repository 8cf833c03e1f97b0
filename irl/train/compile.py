"""CompILE baseline training (docs/method.md §8.2; model: irl/models/compile.py).

Loss per episode: Σ_t Σ_i seg_i(t) NLL_i(t) + α_z Σ_i KL(z_i) + α_β KL_b
(CompILE's objective with the frozen base model as the decoder's likelihood),
divided by the batch's number of valid steps (a constant factor per batch,
so the terms keep CompILE's per-episode balance). Fresh ε = 0 expert data
(D*) in every step.

θ is frozen by construction: its parameters are an argument of `chunk`, not
part of `loop.TrainState`, and the residual e_{L/2} is computed under
`stop_gradient`. The encoder is CompILE's own (the base model's lower-half
architecture), from a fresh init or (compile.encoder_init='base_model') a copy
of θ's lower half.

`make_trainer(config)` returns pure functions like
`irl.train.metacontroller`: `init(key, base_params, z_weight, b_weight)` and
`chunk(state, base_params) -> (state, metrics)` (`train_chunk`: its jit);
α_z, α_β live in the state, so runs can be vmapped over them.
`train(config, workdir)` is the job; `load_params(config, workdir)` gives a
finished run's parameters and the `CompileAdapter` to internal RL.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from irl import config as config_lib
from irl import optim
from irl.config import Config
from irl.models import BaseModel
from irl.models import compile as compile_lib
from irl.models import compile_adapter
from irl.train import loop
from irl.train import losses
from irl.train import pretrain
from irl.train import segmentation
from irl.train import segmenting
from irl.utils import checkpoint as ckpt_lib
from irl.utils import config_utils

RUN_NAME = 'compile'
# Fields of `config.compile` that define what a checkpoint means.
_FINGERPRINT_FIELDS = (
    'seed', 'layer', 'max_segments', 'latent_dim', 'head_hidden',
    'decoder_hidden', 'rank', 'temperature', 'prior_rate', 'z_kl_weight',
    'b_kl_weight', 'kl_delay', 'kl_warmup', 'encoder_init', 'batch_size',
    'seq_len', 'learning_rate', 'weight_decay', 'grad_clip'
) + optim.SCHEDULE_FIELDS
# Checkpoints written before these fields existed trained under these values.
ADDED_FIELDS = {**pretrain.ADDED_FIELDS, **optim.added_fields('compile'),
                'compile.kl_delay': 0, 'compile.kl_warmup': 0}


# --------------------------------------------------------------------------
# Config.


def compile_config(config: Config) -> compile_lib.CompileConfig:
  """The `CompileConfig` of `config.compile` for `config.model`."""
  c = config.compile
  return config_utils.from_section(
      compile_lib.CompileConfig, c, model=pretrain.model_config(config),
      layer=segmenting.control_layer(config, 'compile'),
      rank=c.rank or None, temperature=float(c.temperature),
      prior_rate=float(c.prior_rate))


def make_adapter(config: Config) -> compile_adapter.CompileAdapter:
  """The causal switch/controller adapter that internal RL steps with."""
  config = config_lib.build(config)
  return compile_adapter.CompileAdapter(
      compile_lib.CompILE(compile_config(config)),
      max_segments=config.compile.rl_max_segments)


def fingerprint(config: Config) -> dict:
  return segmenting.fingerprint(config, 'compile', _FINGERPRINT_FIELDS)


# --------------------------------------------------------------------------
# Pure training functions.


def make_trainer(config: Config) -> segmenting.Trainer:
  """Pure init/chunk/evaluate functions; shared (with their compilations)
  between configs that differ only in run length, cadence or α."""
  config = config_lib.build(config)
  return _make_trainer(segmenting.factory_key(
      config, 'compile', ('z_kl_weight', 'b_kl_weight', 'rl_max_segments')))


@functools.lru_cache(maxsize=8)
def _make_trainer(config: Config) -> segmenting.Trainer:
  c = config.compile
  base_model = BaseModel(pretrain.model_config(config))
  model = compile_lib.CompILE(compile_config(config))
  cfg = model.config
  layer, num = cfg.layer, cfg.max_segments
  sample, sample_eval = segmenting.expert_streams(config, c)
  tx = optim.section_optimizer(c, c.num_steps)

  def init(key: jax.Array, base_params: Any = None,
           z_weight: float | jax.Array = 0.0,
           b_weight: float | jax.Array = 0.0) -> loop.TrainState:
    """params: {'compile': φ}; the extra leaves `z_weight`, `b_weight` are
    α_z and α_β."""
    k_model, k_data = jax.random.split(key)
    obs = jnp.zeros((1, 2, cfg.model.obs_dim))
    params = model.init(k_model, obs, jnp.ones((1, 2), bool))
    if c.encoder_init == 'base_model':
      if base_params is None:
        raise ValueError("compile.encoder_init='base_model' copies θ's lower "
                         'half: pass base_params.')
      params = copy_lower_half(params, base_params, layer)
    params = {'compile': params}
    return loop.TrainState(step=jnp.int32(0), params=params,
                           opt_state=tx.init(params), key=k_data,
                           z_weight=jnp.float32(z_weight),
                           b_weight=jnp.float32(b_weight))

  def segment_nll(base_params, e, out, actions):
    """[B, T] Σ_i seg_i(t) NLL_i(t): the N controllers folded into the batch."""
    batch, seq_len, width = e.shape
    e_all = jnp.broadcast_to(e, (num,) + e.shape).reshape(-1, seq_len, width)
    fold = lambda f: jnp.swapaxes(f, 0, 1).reshape((num * batch, 1)
                                                   + f.shape[2:])
    iv = model.intervention(tuple(fold(f) for f in out.controller))
    upper = base_model.apply(base_params, e_all, layer, iv,
                             method=BaseModel.upper)
    nll = losses.action_nll(
        upper, jnp.tile(actions, (num,) + (1,) * (actions.ndim - 1)))
    nll = nll.reshape(num, batch, seq_len)
    return jnp.einsum('bnt,nbt->bt', out.segment_mask, nll), upper

  def forward(params, base_params, batch, gumbel, noise):
    e, _, _ = base_model.apply(base_params, batch.obs, layer,
                               method=BaseModel.lower)
    e = jax.lax.stop_gradient(e)
    out = model.apply(params['compile'], batch.obs, batch.valid, gumbel,
                      noise)
    nll, upper = segment_nll(base_params, e, out, batch.actions)
    return out, nll, upper

  def loss_fn(params, base_params, batch, gumbel, noise, z_weight, b_weight):
    """(loss, metrics); batch: a Rollout [B, T]."""
    out, nll, _ = forward(params, base_params, batch, gumbel, noise)
    valid = batch.valid
    steps = jnp.maximum(valid.sum(), 1.0)
    nll_sum = (nll * valid).sum()
    loss = (nll_sum + z_weight * out.kl_z.sum() + b_weight * out.kl_b.sum()
            ) / steps
    scored = valid & (jnp.arange(valid.shape[1]) >= 1)
    in_episode = out.boundaries[..., :-1].sum((1, 2))
    sw = segmentation.switches(out.switch_gate, valid, c.switch_threshold)
    bounds = segmentation.true_boundaries(batch.subgoal_index, valid)
    metrics = {
        'loss': loss, 'action_nll': nll_sum / steps,
        'kl_z': out.kl_z.mean(), 'kl_b': out.kl_b.mean(),
        'segments_per_episode': 1.0 + in_episode.mean(),
        'beta_mean': losses.masked_mean(out.switch_gate, scored),
        'switches_per_episode': sw.sum(1).mean(),
        'boundaries_per_episode': bounds.sum(1).mean(),
    }
    return loss, metrics

  # The metacontroller's free start, on both prices (irl/optim.py: kl_ramp).
  kl_ramp = optim.kl_ramp(c.kl_delay, c.kl_warmup)

  def one_step(base_params, state: loop.TrainState, _):
    key, k_data, k_gumbel, k_noise = jax.random.split(state.key, 4)
    batch = sample(k_data)
    shape = batch.valid.shape
    gumbel = jax.random.gumbel(k_gumbel, (shape[0], num - 1, shape[1] + 1))
    noise = jax.random.normal(k_noise, (shape[0], num, cfg.latent_dim))
    ramp = kl_ramp(state.step)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(
        state.params, base_params, batch, gumbel, noise,
        state.z_weight * ramp, state.b_weight * ramp)
    metrics['kl_ramp_now'] = jnp.float32(ramp)
    metrics['grad_norm'] = optax.tree.norm(grads)
    for part, g in grads['compile']['params'].items():
      metrics[f'grad_norm/{part}'] = optax.tree.norm(g)
    return state.apply_gradients(tx, grads, key=key), metrics

  def chunk(state: loop.TrainState, base_params: Any
            ) -> tuple[loop.TrainState, dict]:
    """`compile.log_every` steps with θ = base_params (frozen)."""
    return loop.scan_steps(functools.partial(one_step, base_params), state,
                           c.log_every)

  def evaluate_batch(params: Any, base_params: Any, key: jax.Array) -> dict:
    """One held-out D* batch: hard (argmax) boundaries and z = μ."""
    batch = sample_eval(key)
    out, nll, _ = forward(params, base_params, batch, None, None)
    plain = base_model.apply(base_params, batch.obs)
    return {
        'boundary': mask_boundaries_float(out.segment_mask),
        'beta': out.switch_gate, 'valid': batch.valid,
        'subgoal_index': batch.subgoal_index, 'subgoal': batch.subgoal,
        'action_nll': nll,
        'action_nll_no_control': losses.action_nll(plain, batch.actions),
        'kl_z': out.kl_z[:, None], 'kl_b': out.kl_b[:, None],
    }

  return segmenting.Trainer(
      base_model=base_model, model=model, init=jax.jit(init),
      chunk=chunk, train_chunk=jax.jit(chunk), loss=loss_fn,
      evaluate_batch=evaluate_batch, evaluate_jit=jax.jit(evaluate_batch))


def mask_boundaries_float(segment_mask: jax.Array) -> jax.Array:
  """[B, T] 1.0 where a (hard) segment starts at t ≥ 1, else 0.0."""
  return compile_lib.mask_boundaries(segment_mask).astype(jnp.float32)


def copy_lower_half(params: Any, base_params: Any, layer: int) -> Any:
  """CompILE params with the encoder replaced by θ's lower half (a copy)."""
  theta = base_params['params']
  encoder = {'obs_encoder': theta['obs_encoder']}
  encoder.update({f'blocks_{i}': theta[f'blocks_{i}'] for i in range(layer)})
  inner = dict(params['params'])
  inner['encoder'] = jax.tree.map(jnp.array, encoder)
  return {**params, 'params': inner}


# --------------------------------------------------------------------------
# Evaluation.


def summarise_eval(config: Config,
                   arrays: dict[str, np.ndarray]) -> dict[str, float]:
  """Boundary F1 of the hard segments and of the causal β, held-out losses."""
  c = config.compile
  valid = arrays['valid']
  summary = segmentation.segmentation_report(
      arrays['boundary'], valid, arrays['subgoal_index'], 0.5,
      c.boundary_tolerance)
  causal = segmentation.segmentation_report(
      arrays['beta'], valid, arrays['subgoal_index'], c.switch_threshold,
      c.boundary_tolerance)
  for k in ('f1', 'precision', 'recall', 'median_switches_per_episode',
            'beta_mean', 'beta_binary_fraction'):
    summary[f'causal_{k}'] = causal[k]
  summary.update(segmentation.step_means(
      arrays, ('action_nll', 'action_nll_no_control')))
  summary['kl_z_per_episode'] = float(arrays['kl_z'].mean())
  summary['kl_b_per_episode'] = float(arrays['kl_b'].mean())
  return summary


# --------------------------------------------------------------------------
# Jobs.


def _base_params(config: Config, workdir: str) -> Any:
  return pretrain.load_pretrained(config, workdir, 'CompILE training')


def checkpointer(config: Config, workdir: str) -> ckpt_lib.Checkpointer:
  return loop.checkpointer(workdir, RUN_NAME, config.compile,
                          fingerprint(config), ADDED_FIELDS)


def _initial_state(trainer: segmenting.Trainer,
                   config: Config,
                   base_params: Any) -> loop.TrainState:
  c = config.compile
  return trainer.init(jax.random.key(c.seed), base_params, c.z_kl_weight,
                      c.b_kl_weight)


def load_params(config: Config, workdir: str) -> tuple[Any, Any]:
  """(CompILE params φ, frozen base-model params θ) of a finished run.

  Use with `make_adapter(config)` for internal RL.
  """
  config = config_lib.build(config)
  trainer = make_trainer(config)
  base_params = _base_params(config, workdir)
  state = loop.load_finished(
      checkpointer(config, workdir), config.compile.num_steps,
      lambda: _initial_state(trainer, config, base_params), 'compile.num_steps',
      'CompILE run', 'train it with irl.train.compile.train (the pipeline\'s '
      'compile phase) first')
  return state.params['compile'], base_params


def train(config: Config, workdir: str,
          run_eval: bool = True,
          progress_fn: loop.ProgressFn | None = None) -> dict:
  """Trains CompILE against the frozen θ (resuming from `workdir`).

  Reads θ from `<workdir>/checkpoints/pretrain`; writes
  `<workdir>/checkpoints/compile`, metrics `<workdir>/metrics/compile*` and
  the segmentation analysis in `<workdir>/compile/`.
  """
  config = config_lib.build(config)
  c = config.compile
  base_params = _base_params(config, workdir)
  trainer = make_trainer(config)
  return segmenting.train_job(
      config, 'compile', RUN_NAME, workdir, trainer,
      checkpointer(config, workdir),
      _initial_state(trainer, config, base_params), base_params,
      functools.partial(summarise_eval, config),
      {'z_kl_weight': float(c.z_kl_weight),
       'b_kl_weight': float(c.b_kl_weight)},
      show=('loss', 'action_nll', 'kl_z', 'kl_b', 'segments_per_episode',
            'steps_per_sec'), run_eval=run_eval, progress_fn=progress_fn)
