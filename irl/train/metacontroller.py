"""Metacontroller training: discovering temporal abstractions (docs/method.md §6).

Loss per episode: Σ_t [−ln p(a_t | o_{1:t}, z_{1:t}) + α KL(N(μ_t, Σ_t) ‖ N(0, I))]
over valid steps, on fresh ε = 0 expert data (D*). Implemented as the mean
over the batch's valid steps (the sum up to a constant factor, which AdamW
does not see).

The base model θ is frozen by construction: in the default mode
(`metacontroller.base_model = 'frozen'`) its parameters are an argument of
`train_chunk`, not part of `loop.TrainState`, so the optimiser never holds them,
and the residual e_{L/2} is computed under `stop_gradient`. The baselines:
  'cotrain'          θ starts from the pretrained model and is in the state;
  'cotrain_scratch'  θ starts from a fresh init (docs/method.md §8.4, the grid);
  switching='always' β ≡ 1, no temporal abstraction (docs/method.md §8.3).
The co-trained θ is trained with the same loss (no next-observation term)
and the same AdamW as φ.

`make_trainer(config)` returns pure functions like `irl.train.pretrain`:
`init(key, base_params, kl_weight) -> loop.TrainState` and
`chunk(state, base_params) -> (state, metrics)` (`train_chunk` is its jit).
α lives in the state, so `jax.vmap` over states runs several seeds and
several α at once (`rate_distortion`). `train(config, workdir)` is the job;
`load_params(config, workdir)` gives a finished run's parameters to internal
RL.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from irl import config as config_lib
from irl import optim
from irl.config import Config
from irl.models import BaseModel
from irl.models import metacontroller as mc_lib
from irl.train import loop
from irl.train import losses
from irl.train import pretrain
from irl.train import segmentation
from irl.train import segmenting
from irl.utils import checkpoint as ckpt_lib
from irl.utils import config_utils

# Fields of `config.metacontroller` that define what a checkpoint means.
_MC_FINGERPRINT_FIELDS = (
    'seed', 'layer', 'latent_dim', 'embed_dim', 'embed_width', 'embed_heads',
    'history_dim', 'encoder_hidden', 'switch_hidden', 'switch_bias',
    'decoder_hidden', 'rank', 'decoder_init_scale', 'kl_delay',
    'kl_warmup',
    'kl_weight', 'switching', 'base_model', 'batch_size', 'seq_len',
    'learning_rate', 'weight_decay', 'grad_clip') + optim.SCHEDULE_FIELDS
# Checkpoints written before these fields existed trained under these values.
ADDED_FIELDS = {**pretrain.ADDED_FIELDS, **optim.added_fields('metacontroller'),
                'metacontroller.decoder_init_scale': 0.0,
                'metacontroller.kl_delay': 0,
                'metacontroller.kl_warmup': 0}


# --------------------------------------------------------------------------
# Config.


# Metacontroller variants the pipeline trains for the RL baselines: name ->
# config overrides (a value, or a function of the config).
VARIANTS = {
    'method': {'switching': 'learned', 'base_model': 'frozen'},
    'no_temporal_abstraction': {'switching': 'always', 'base_model': 'frozen'},
    # docs/method.md §8.4 (grid: θ from scratch); rl.cotrained_base_model picks.
    'cotrained': {'switching': 'learned',
                  'base_model': lambda c: c.rl.cotrained_base_model},
}


def variant_config(config: Config, variant: str,
                   changes: dict[str, Any] | None = None) -> Config:
  """`config` with the metacontroller overrides of `variant` and any other
  `changes` (dotted fields), built once."""
  config = config_lib.build(config)
  return config_lib.replace(config, {**(changes or {}), **{
      f'metacontroller.{key}': value(config) if callable(value) else value
      for key, value in VARIANTS[variant].items()}})


def metacontroller_config(config: Config) -> mc_lib.MetacontrollerConfig:
  """The `MetacontrollerConfig` of `config.metacontroller` for `config.model`."""
  m = config.metacontroller
  return config_utils.from_section(
      mc_lib.MetacontrollerConfig, m, width=config.model.width,
      layer=segmenting.control_layer(config, 'metacontroller'),
      switch_bias=float(m.switch_bias), rank=m.rank or None,
      always_switch=m.switching == 'always')


def run_name(config: Config) -> str:
  """'metacontroller' plus a suffix per baseline: names checkpoints, metrics
  and the output folder, so the variants can share one workdir."""
  m = config.metacontroller
  name = 'metacontroller'
  if m.switching == 'always':
    name += '_beta1'
  if m.base_model != 'frozen':
    name += f'_{m.base_model}'
  return name


def fingerprint(config: Config) -> dict:
  # A run on a pretrained θ is only meaningful with the θ it started from.
  return segmenting.fingerprint(
      config, 'metacontroller', _MC_FINGERPRINT_FIELDS,
      from_pretrained=config.metacontroller.base_model != 'cotrain_scratch')


# --------------------------------------------------------------------------
# Pure training functions.


def make_trainer(config: Config) -> segmenting.Trainer:
  """Pure init/chunk/evaluate functions; shared (with their compilations)
  between configs that differ only in run length, cadence or α."""
  config = config_lib.build(config)
  return _make_trainer(segmenting.factory_key(
      config, 'metacontroller', ('kl_weight',)))


@functools.lru_cache(maxsize=8)
def _make_trainer(config: Config) -> segmenting.Trainer:
  m = config.metacontroller
  base_model = BaseModel(pretrain.model_config(config))
  metacontroller = mc_lib.Metacontroller(metacontroller_config(config))
  layer = metacontroller.config.layer
  latent_dim = metacontroller.config.latent_dim
  frozen = m.base_model == 'frozen'
  sample, sample_eval = segmenting.expert_streams(config, m)
  tx = optim.section_optimizer(m, m.num_steps)

  def init(key: jax.Array, base_params: Any = None,
           kl_weight: float | jax.Array = 0.0) -> loop.TrainState:
    """params: {'metacontroller': φ} (+ 'base_model': θ if co-trained); the
    extra leaf `kl_weight` is α."""
    k_mc, k_base, k_data = jax.random.split(key, 3)
    # Parameter shapes do not depend on B or T: initialise on one step.
    e = jnp.zeros((1, 1, base_model.config.width))
    params = {'metacontroller': metacontroller.init(k_mc, e,
                                                    jnp.ones((1, 1), bool))}
    if m.base_model == 'cotrain_scratch':
      obs = jnp.zeros((1, 1, base_model.config.obs_dim))
      params['base_model'] = base_model.init(k_base, obs)
    elif m.base_model == 'cotrain':
      if base_params is None:
        raise ValueError("base_model='cotrain' starts from pretrained "
                         'parameters: pass base_params.')
      params['base_model'] = base_params
    return loop.TrainState(step=jnp.int32(0), params=params,
                           opt_state=tx.init(params), key=k_data,
                           kl_weight=jnp.float32(kl_weight))

  def forward(params, base_params, batch, noise):
    """(base-model output, metacontroller output) on a batch."""
    theta = base_params if frozen else params['base_model']
    e, _, _ = base_model.apply(theta, batch.obs, layer,
                               method=BaseModel.lower)
    if frozen:
      e = jax.lax.stop_gradient(e)
    mc = metacontroller.apply(params['metacontroller'], e, batch.valid, noise)
    out = base_model.apply(theta, e, layer, metacontroller.intervention(
        mc.controller), method=BaseModel.upper)
    return out, mc

  def loss_fn(params, base_params, batch, noise, kl_weight):
    """(loss, metrics); batch: a Rollout [B, T]; noise: [B, T, n_z]."""
    out, mc = forward(params, base_params, batch, noise)
    valid = batch.valid
    nll = losses.masked_mean(losses.action_nll(out, batch.actions), valid)
    kl = losses.masked_mean(mc.kl, valid)
    loss = nll + kl_weight * kl
    sw = segmentation.switches(mc.switch_gate, valid, m.switch_threshold)
    bounds = segmentation.true_boundaries(batch.subgoal_index, valid)
    scored = valid & (jnp.arange(valid.shape[1]) >= 1)
    beta = mc.switch_gate
    metrics = {
        'loss': loss, 'action_nll': nll, 'kl': kl,
        'kl_per_episode': (mc.kl * valid).sum(1).mean(),
        **losses.action_fit(out, batch.actions, valid),
        'beta_mean': losses.masked_mean(beta, scored),
        'beta_binary_fraction': losses.masked_mean(
            ((beta < 0.1) | (beta > 0.9)).astype(jnp.float32), scored),
        'switches_per_episode': sw.sum(1).mean(),
        'boundaries_per_episode': bounds.sum(1).mean(),
    }
    return loss, metrics

  # α_t = α·clip((t − kl_delay) / kl_warmup, 0, 1); α stays in the state,
  # so vmapped runs keep their own.
  kl_ramp = optim.kl_ramp(m.kl_delay, m.kl_warmup)

  def kl_weight_at(state: loop.TrainState) -> jax.Array:
    """α at this step; without a ramp the constant α of the paper."""
    return state.kl_weight * kl_ramp(state.step)

  def one_step(base_params, state: loop.TrainState, _):
    key, k_data, k_noise = jax.random.split(state.key, 3)
    batch = sample(k_data)
    noise = jax.random.normal(k_noise, batch.valid.shape + (latent_dim,))
    kl_weight = kl_weight_at(state)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(
        state.params, base_params, batch, noise, kl_weight)
    metrics['kl_weight_now'] = kl_weight
    metrics.update(_grad_metrics(grads))
    return state.apply_gradients(tx, grads, key=key), metrics

  def chunk(state: loop.TrainState, base_params: Any
            ) -> tuple[loop.TrainState, dict]:
    """`metacontroller.log_every` steps; base_params: θ (frozen) or None."""
    if frozen and base_params is None:
      raise ValueError('the frozen base model needs base_params.')
    return loop.scan_steps(functools.partial(one_step, base_params), state,
                           m.log_every)

  def evaluate_batch(params: Any, base_params: Any, key: jax.Array) -> dict:
    """One held-out D* batch: β under the posterior mean (ε = 0), and the two
    loss terms under sampled codes (the training objective)."""
    k_data, k_noise = jax.random.split(key)
    batch = sample_eval(k_data)
    noise = jax.random.normal(k_noise, batch.valid.shape + (latent_dim,))
    out, mc = forward(params, base_params, batch, noise)
    out_mean, mc_mean = forward(params, base_params, batch, None)
    theta = base_params if frozen else params['base_model']
    plain = base_model.apply(theta, batch.obs)
    return {
        'beta': mc_mean.switch_gate, 'valid': batch.valid,
        'subgoal_index': batch.subgoal_index, 'subgoal': batch.subgoal,
        'code': mc_mean.latent_code,
        'action_nll': losses.action_nll(out, batch.actions),
        'action_nll_posterior_mean': losses.action_nll(out_mean,
                                                       batch.actions),
        'action_nll_no_control': losses.action_nll(plain, batch.actions),
        'kl': mc.kl,
        # Ties are defined by the discrete expert's set of optimal moves
        # (the arena's `optimal` is a grid direction for a continuous action).
        **({} if out.action_logits is None else
           {'optimal_moves': batch.optimal.sum(-1)}),
    }

  return segmenting.Trainer(
      base_model=base_model, model=metacontroller, init=jax.jit(init),
      chunk=chunk, train_chunk=jax.jit(chunk), loss=loss_fn,
      evaluate_batch=evaluate_batch, evaluate_jit=jax.jit(evaluate_batch))


def _grad_metrics(grads: Any) -> dict[str, jax.Array]:
  """Global and per-component gradient norms, and how many metacontroller
  parameter leaves got an all-zero gradient (a dead component: e.g. every
  leaf upstream of a decoder whose B is still 0)."""
  mc = grads['metacontroller']['params']
  parts = {'embedder': mc['embedder'], 'encoder': mc['posterior']['encoder'],
           'history': mc['posterior']['cell']['history'],
           'switch_gate': mc['posterior']['cell']['switch_gate'],
           'decoder': mc['decoder']}
  metrics = {'grad_norm': optax.tree.norm(grads)}
  metrics.update({f'grad_norm/{k}': optax.tree.norm(v)
                  for k, v in parts.items()})
  if 'base_model' in grads:
    metrics['grad_norm/base_model'] = optax.tree.norm(grads['base_model'])
  metrics['zero_grad_leaves'] = sum(
      jnp.all(g == 0).astype(jnp.float32) for g in jax.tree.leaves(mc))
  return metrics


# --------------------------------------------------------------------------
# Evaluation.


def collect_eval(config: Config, batch_fn: Callable) -> dict[str, np.ndarray]:
  """`segmenting.collect_eval` at the metacontroller's evaluation size."""
  m = config.metacontroller
  return segmenting.collect_eval(batch_fn, m.eval_episodes,
                                 m.eval_batch_size)


def summarise_eval(config: Config,
                   arrays: dict[str, np.ndarray]) -> dict[str, float]:
  """Segmentation scores and held-out loss terms of one run's eval arrays."""
  m = config.metacontroller
  valid = arrays['valid']
  summary = segmentation.segmentation_report(
      arrays['beta'], valid, arrays['subgoal_index'], m.switch_threshold,
      m.boundary_tolerance)
  if 'code' in arrays:
    summary.update(segmentation.code_subgoal_accuracy(
        arrays['code'], arrays['subgoal'], arrays['subgoal_index'], valid))
  summary.update(segmentation.step_means(arrays, (
      'action_nll', 'action_nll_posterior_mean', 'action_nll_no_control',
      'kl')))
  summary['kl_per_episode'] = float((arrays['kl'] * valid).sum(-1).mean())
  if 'optimal_moves' in arrays:
    summary.update(segmentation.nll_at_ties(arrays))
  return summary


# --------------------------------------------------------------------------
# Jobs.


def _base_params(config: Config, workdir: str) -> Any:
  """θ from `<workdir>/checkpoints/pretrain`, or None when trained from scratch."""
  if config.metacontroller.base_model == 'cotrain_scratch':
    return None
  return pretrain.load_pretrained(
      config, workdir, 'metacontroller training (unless '
      '--config.metacontroller.base_model=cotrain_scratch)')


def checkpointer(config: Config, workdir: str) -> ckpt_lib.Checkpointer:
  return loop.checkpointer(workdir, run_name(config), config.metacontroller,
                          fingerprint(config), ADDED_FIELDS)


def _initial_state(trainer: segmenting.Trainer,
                   config: Config,
                   base_params: Any) -> loop.TrainState:
  m = config.metacontroller
  return trainer.init(jax.random.key(m.seed), base_params, m.kl_weight)


def load_params(config: Config, workdir: str) -> tuple[Any, Any]:
  """(metacontroller params φ, base-model params θ) of a finished run.

  θ is the pretrained model for 'frozen', the co-trained one otherwise.
  """
  config = config_lib.build(config)
  trainer = make_trainer(config)
  base_params = _base_params(config, workdir)
  state = loop.load_finished(
      checkpointer(config, workdir), config.metacontroller.num_steps,
      lambda: _initial_state(trainer, config, base_params),
      'metacontroller.num_steps',
      f'{run_name(config)} run', 'run experiments/train_metacontroller.py '
      'with this config and workdir first')
  theta = state.params.get('base_model', base_params)
  return state.params['metacontroller'], theta


def train(config: Config, workdir: str,
          run_eval: bool = True,
          progress_fn: loop.ProgressFn | None = None) -> dict:
  """Trains the metacontroller (resuming from `workdir`), evaluates it.

  Reads θ from `<workdir>/checkpoints/pretrain` (unless co-trained from
  scratch); writes `<workdir>/checkpoints/<run_name>`, metrics
  `<workdir>/metrics/<run_name>*.json*`, and the segmentation analysis
  (`segmentation.json` and the β traces' arrays, which
  `irl.analysis.reports.beta_traces` draws) in `<workdir>/<run_name>/`.
  """
  config = config_lib.build(config)
  m = config.metacontroller
  base_params = _base_params(config, workdir)
  # Only a frozen θ is an argument of the step; a co-trained one is state.
  frozen_params = base_params if m.base_model == 'frozen' else None
  trainer = make_trainer(config)
  return segmenting.train_job(
      config, 'metacontroller', run_name(config), workdir, trainer,
      checkpointer(config, workdir),
      _initial_state(trainer, config, base_params), frozen_params,
      functools.partial(summarise_eval, config),
      {'kl_weight': float(m.kl_weight), 'switching': m.switching,
       'base_model': m.base_model},
      show=('loss', 'action_nll', 'kl', 'switches_per_episode',
            'steps_per_sec'), run_eval=run_eval, progress_fn=progress_fn)
