"""The base autoregressive model (docs/method.md §4), splittable at any layer.

The residual stream e_l (l = 0..L; l = 0 the observation embedding, l = k the
output of block k) is returned as data, and an `Intervention` edits it at one
layer. One code path serves pretraining, probing, controllability, the
metacontroller and internal RL:

  out = model.apply(params, obs)                               # full forward
  e, res_lo, cache = model.apply(params, obs, l, cache,
                                 method=BaseModel.lower)       # layers < l
  out = model.apply(params, e, l, intervention, cache,
                    method=BaseModel.upper)                    # layers >= l

`__call__(obs, intervention, cache)` is literally `upper(lower(obs, 0), 0)`,
and `upper(lower(obs, l), l)` gives the same outputs for every l.

Residuals record the *post-intervention* value at the edited layer (what the
blocks above read). `lower` never intervenes, so its last residual e_l is the
clean stream that a metacontroller reads before building U.

Decoding: `init_cache(config, B)` gives a tuple of L per-layer caches. Pass it
with T = 1 (or a T > 1 prefill chunk) to get the updated cache back in
`ModelOutput.cache`. `lower` and `upper` take and return the full tuple and
only touch their own layers (< l and >= l), so the two halves chain:
  e, _, cache = lower(obs_t, l, cache); out = upper(e, l, iv, cache);
  cache = out.cache.
"""
from __future__ import annotations

from typing import Union

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from irl.models import common
from irl.models.config import ModelConfig
from irl.models.encoders import ObservationEncoder
from irl.models.hawk import HawkBlock, RecurrentCache, init_recurrent_cache
from irl.models.intervention import Intervention
from irl.models.transformer import (AttentionCache, TransformerBlock,
                                    init_attention_cache)

LayerCache = Union[AttentionCache, RecurrentCache]
Cache = tuple[LayerCache, ...]

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


@flax.struct.dataclass
class ModelOutput:
  """Outputs of `BaseModel.__call__` / `BaseModel.upper` (float32 heads).

  Attributes:
    action_logits: [B, T, num_actions] categorical logits (discrete), or None.
    action_mean: [B, T, action_dim] Gaussian mean (continuous), or None.
    action_log_std: [B, T, action_dim], clipped to [-5, 2] (continuous), or
      None.
    obs_pred: [B, T, obs_dim] next-observation prediction (Bernoulli logits or
      Gaussian means: the loss decides).
    residuals: [L - l + 1, B, T, width] residual stream e_l..e_L in the compute
      dtype (l = 0 for the full forward), post-intervention.
    cache: the updated per-layer cache, or None when none was given.
    future_logits: [B, T, K, num_actions] logits of a_{t+1..t+K} (the
      auxiliary heads of `config.future_actions` = K), or None when K = 0.
  """
  action_logits: jax.Array | None
  action_mean: jax.Array | None
  action_log_std: jax.Array | None
  obs_pred: jax.Array
  residuals: jax.Array
  cache: Cache | None
  future_logits: jax.Array | None = None


def init_cache(config: ModelConfig, batch_size: int) -> Cache:
  """Empty decoding cache: a tuple of `config.num_layers` per-layer caches.

  Transformer: KV cache of `max_len` slots and a per-batch-element position.
  Hawk: RG-LRU state and the last `conv_width - 1` Conv1D inputs.
  """
  config.validate()
  dtype = config.compute_dtype
  if config.backbone == 'transformer':
    make = lambda: init_attention_cache(batch_size, config.max_len,
                                        config.num_heads, config.head_dim,
                                        dtype)
  else:
    make = lambda: init_recurrent_cache(batch_size, config.width,
                                        config.conv_width, dtype)
  return tuple(make() for _ in range(config.num_layers))


def reset_cache(cache: Cache, done: jax.Array) -> Cache:
  """Zeroes (restarts) the cache of the batch elements where done: [B] bool."""
  return common.select_where(done, jax.tree.map(jnp.zeros_like, cache), cache)


class BaseModel(nn.Module):
  """Causal sequence model o_{1:t} -> (a_t, o_{t+1}) with an editable stream."""
  config: ModelConfig

  def setup(self) -> None:
    cfg = self.config.validate()
    dtype = cfg.compute_dtype
    self.obs_encoder = ObservationEncoder(cfg.width, cfg.obs_encoder,
                                          cfg.grid_size, dtype)
    if cfg.backbone == 'transformer':
      self.blocks = [
          TransformerBlock(cfg.width, cfg.num_heads, cfg.mlp_dim,
                           cfg.num_buckets, cfg.max_distance,
                           cfg.window(i), dtype)
          for i in range(cfg.num_layers)]
    else:
      self.blocks = [
          HawkBlock(cfg.width, cfg.num_heads, cfg.mlp_dim, cfg.conv_width,
                    dtype)
          for _ in range(cfg.num_layers)]
    self.final_norm = common.norm(dtype)
    num_action_outputs = (cfg.num_actions if cfg.action_type == 'discrete'
                          else 2 * cfg.action_dim)
    self.action_head = common.dense(num_action_outputs, dtype)
    self.obs_head = common.dense(cfg.obs_dim, dtype)
    if cfg.future_actions:
      self.future_head = common.dense(cfg.future_actions * cfg.num_actions,
                                      dtype)

  def __call__(self, obs: jax.Array,
               intervention: Intervention | None = None,
               cache: Cache | None = None,
               segments: jax.Array | None = None) -> ModelOutput:
    """Full forward.

    Args:
      obs: [B, T, obs_dim] observations o_{1:T}.
      intervention: edit of the residual stream at `intervention.layer`, or
        None.
      cache: per-layer decoding cache (see `init_cache`), or None.
      segments: [B, T] int episode index of each step in rows that pack
        several episodes (no cache): a step attends only to its own episode
        (Transformer), or the recurrence restarts where one begins (Hawk),
        so each is computed as if alone. None: one episode per row.

    Returns:
      `ModelOutput` with residuals [L + 1, B, T, width].
    """
    e, _, cache = self.lower(obs, 0, cache, segments)
    return self.upper(e, 0, intervention, cache, segments)

  def lower(self, obs: jax.Array, layer: int, cache: Cache | None = None,
            segments: jax.Array | None = None
            ) -> tuple[jax.Array, jax.Array, Cache | None]:
    """Embeds obs: [B, T, obs_dim] and runs blocks 1..layer.

    Returns:
      e_layer: [B, T, width] (never intervened on),
      residuals: [layer + 1, B, T, width] (e_0..e_layer),
      cache: the full tuple with layers < `layer` updated (or None).
    """
    self._check_layer(layer)
    self._check_cache(cache)
    self._check_segments(segments, cache)
    e = self.obs_encoder(obs)
    return self._run_blocks(e, 0, layer, None, cache, segments)

  def upper(self, e: jax.Array, layer: int,
            intervention: Intervention | None = None,
            cache: Cache | None = None,
            segments: jax.Array | None = None) -> ModelOutput:
    """Edits e_layer: [B, T, width], runs blocks layer+1..L and the heads.

    The intervention may sit at any index >= `layer`; the usual case is
    `intervention.layer == layer`.

    Returns:
      `ModelOutput` with residuals [L - layer + 1, B, T, width] (e_layer..e_L)
      and the full cache with layers >= `layer` updated.
    """
    self._check_layer(layer)
    self._check_cache(cache)
    self._check_segments(segments, cache)
    if intervention is not None and not (
        layer <= intervention.layer <= self.config.num_layers):
      raise ValueError(
          f'intervention.layer={intervention.layer} must be in '
          f'[{layer}, {self.config.num_layers}] for upper(layer={layer}).')
    e, residuals, cache = self._run_blocks(
        e, layer, self.config.num_layers, intervention, cache, segments)
    return self._heads(e, residuals, cache)

  @nn.nowrap
  def init_cache(self, batch_size: int) -> Cache:
    """See the module-level `init_cache`; needs no parameters."""
    return init_cache(self.config, batch_size)

  def _run_blocks(self, e: jax.Array, start: int, stop: int,
                  intervention: Intervention | None, cache: Cache | None,
                  segments: jax.Array | None = None
                  ) -> tuple[jax.Array, jax.Array, Cache | None]:
    """Residual indices start..stop (blocks start+1..stop)."""
    residuals = []
    new_cache = None if cache is None else list(cache)
    for index in range(start, stop + 1):
      if intervention is not None and intervention.layer == index:
        e = intervention.apply(e)
      residuals.append(e)
      if index < stop:
        layer_cache = None if cache is None else cache[index]
        e, layer_cache = (self.blocks[index](e, layer_cache) if segments is None
                          else self.blocks[index](e, layer_cache, segments))
        if cache is not None:
          new_cache[index] = layer_cache
    return e, jnp.stack(residuals), (None if cache is None
                                     else tuple(new_cache))

  def _heads(self, e: jax.Array, residuals: jax.Array,
             cache: Cache | None) -> ModelOutput:
    h = self.final_norm(e)
    action = self.action_head(h).astype(jnp.float32)
    obs_pred = self.obs_head(h).astype(jnp.float32)
    logits = mean = log_std = future = None
    if self.config.future_actions:
      future = self.future_head(h).astype(jnp.float32).reshape(
          *h.shape[:-1], self.config.future_actions, self.config.num_actions)
    if self.config.action_type == 'discrete':
      logits = action
    else:
      mean, log_std = jnp.split(action, 2, axis=-1)
      log_std = jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)
    return ModelOutput(action_logits=logits, action_mean=mean,
                       action_log_std=log_std, obs_pred=obs_pred,
                       residuals=residuals, cache=cache, future_logits=future)

  def _check_layer(self, layer: int) -> None:
    if not 0 <= layer <= self.config.num_layers:
      raise ValueError(f'layer={layer} must be in [0, '
                       f'{self.config.num_layers}].')

  def _check_cache(self, cache: Cache | None) -> None:
    if cache is not None and len(cache) != self.config.num_layers:
      raise ValueError(f'cache has {len(cache)} layers, the model '
                       f'{self.config.num_layers}.')

  def _check_segments(self, segments: jax.Array | None,
                      cache: Cache | None) -> None:
    if segments is not None and cache is not None:
      raise ValueError('segments (packed episodes) are for full sequences; '
                       'a decoding cache resets with reset_cache instead.')
