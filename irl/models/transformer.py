"""Causal pre-norm Transformer block with a T5 relative-position bias.

Choices (the paper says only "relative-position attention bias, 32 buckets"):
- T5 causal bucketing (bidirectional=False), 32 buckets, max_distance 128.
- One learned bias per head per bucket, *per layer* (each block owns its
  table; T5 shares one table across layers). Per-layer keeps every block
  self-contained, so the model splits at any layer without passing shared
  state, and costs only num_buckets x num_heads parameters per layer.
- The bias table starts at zero, so attention starts content-only.
- Logits are scaled by 1/sqrt(head_dim); q, k, v, o projections have no bias.
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from irl.models import common

_NEG_INF = -1e30  # Finite, so fully masked rows never produce NaNs.


@flax.struct.dataclass
class AttentionCache:
  """KV cache of one attention layer.

  Attributes:
    keys: [B, max_len, num_heads, head_dim], slot s holds position s.
    values: [B, max_len, num_heads, head_dim].
    pos: [B] int32, number of positions written so far (per batch element, so
      environments of a vmapped batch may reset independently).
  """
  keys: jax.Array
  values: jax.Array
  pos: jax.Array


def init_attention_cache(batch_size: int, max_len: int, num_heads: int,
                         head_dim: int,
                         dtype: jnp.dtype = jnp.float32) -> AttentionCache:
  """An empty KV cache (position 0)."""
  shape = (batch_size, max_len, num_heads, head_dim)
  return AttentionCache(keys=jnp.zeros(shape, dtype),
                        values=jnp.zeros(shape, dtype),
                        pos=jnp.zeros((batch_size,), jnp.int32))


def causal_relative_position_bucket(relative_position: jax.Array,
                                    num_buckets: int = 32,
                                    max_distance: int = 128) -> jax.Array:
  """T5's `_relative_position_bucket` with bidirectional=False.

  Args:
    relative_position: int array, key position - query position (<= 0 for
      the past; future offsets map to bucket 0 and are masked anyway).
    num_buckets: total buckets; half are exact offsets, half log-spaced.
    max_distance: offsets >= this share the last bucket.

  Returns:
    int32 array of buckets in [0, num_buckets), same shape.
  """
  n = jnp.maximum(-relative_position, 0).astype(jnp.int32)
  max_exact = num_buckets // 2
  # Clamp the log argument so the branch discarded for small n stays finite.
  n_large = jnp.maximum(n, max_exact).astype(jnp.float32)
  scale = (num_buckets - max_exact) / math.log(max_distance / max_exact)
  val_if_large = max_exact + (jnp.log(n_large / max_exact) * scale).astype(
      jnp.int32)
  val_if_large = jnp.minimum(val_if_large, num_buckets - 1)
  return jnp.where(n < max_exact, n, val_if_large)


@functools.lru_cache(maxsize=64)
def _static_buckets(seq_len: int, num_buckets: int, max_distance: int,
                    window: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Buckets [T, T] (int32) and causal mask [T, T] of a cache-free chunk
  (within `window` steps when > 0).

  Positions 0..T-1 are static, so these are NumPy constants computed once (with
  the same function the decoding path traces, hence the same buckets).
  """
  relative = np.arange(seq_len)[None, :] - np.arange(seq_len)[:, None]
  with jax.ensure_compile_time_eval():
    buckets = np.asarray(causal_relative_position_bucket(
        jnp.asarray(relative), num_buckets, max_distance))
  return buckets, visible(relative, window)


def visible(relative, window: int):
  """Whether a key `relative` steps away (<= 0: the past) may be attended:
  causal, and within the last `window` steps when window > 0."""
  if window:
    return (relative <= 0) & (relative > -window)
  return relative <= 0


class RelativeAttention(nn.Module):
  """Causal multi-head self-attention with a T5 relative-position bias."""
  width: int
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  window: int = 0          # > 0: sliding-window attention over W steps
  dtype: common.Dtype = jnp.float32

  def setup(self) -> None:
    self.q_proj = common.dense(self.width, self.dtype, use_bias=False)
    self.k_proj = common.dense(self.width, self.dtype, use_bias=False)
    self.v_proj = common.dense(self.width, self.dtype, use_bias=False)
    self.out_proj = common.dense(self.width, self.dtype, use_bias=False)
    self.relative_bias = self.param('relative_bias', nn.initializers.zeros,
                                    (self.num_buckets, self.num_heads),
                                    jnp.float32)

  def __call__(self, x: jax.Array, cache: AttentionCache | None = None,
               segments: jax.Array | None = None
               ) -> tuple[jax.Array, AttentionCache | None]:
    """Attends causally over the chunk and, if given, the cached prefix.

    Args:
      x: [B, T, width]. Without a cache, positions are 0..T-1. With a cache,
        they are pos..pos+T-1 and keys/values are written at those slots;
        pos + T must not exceed max_len (not checked under jit).
      cache: this layer's KV cache or None.
      segments: [B, T] episode index per step (no cache): attention stays
        within an episode. The bias depends only on distances, so an episode
        that starts mid-row is computed as it would be alone.

    Returns:
      ([B, T, width], updated cache or None).
    """
    batch, seq_len, _ = x.shape
    head_dim = self.width // self.num_heads
    split = lambda y: y.reshape(batch, seq_len, self.num_heads, head_dim)
    q = split(self.q_proj(x))
    k = split(self.k_proj(x))
    v = split(self.v_proj(x))
    scale = 1.0 / math.sqrt(head_dim)

    if cache is None:
      # The bias with the causal mask folded in ([H, T, T], float32): one add
      # on the logits instead of a gather, an add and a select per element.
      buckets, mask = _static_buckets(seq_len, self.num_buckets,
                                      self.max_distance, self.window)
      table = jnp.moveaxis(self.relative_bias[buckets], -1, 0)  # [H, T, T]
      if segments is not None:
        same = segments[:, :, None] == segments[:, None, :]   # [B, T, T]
        mask = mask & same[:, None]                           # [B, 1, T, T]
      bias = jnp.where(mask, table, _NEG_INF)
      # Heads to the front explicitly, so both products are plain batched
      # matmuls (XLA otherwise picks transposed operand layouts for them).
      heads_first = lambda y: jnp.moveaxis(y, 2, 1)          # [B, H, T, D]
      logits = jnp.einsum('bhtd,bhsd->bhts', heads_first(q), heads_first(k))
      logits = logits.astype(jnp.float32) * scale + bias
      probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
      attended = jnp.moveaxis(
          jnp.einsum('bhts,bhsd->bhtd', probs, heads_first(v)), 1, 2)
      out = self.out_proj(attended.reshape(batch, seq_len, self.width))
      return out, None

    write = jax.vmap(
        lambda buf, new, p: jax.lax.dynamic_update_slice(buf, new, (p, 0, 0)))
    keys = write(cache.keys, k.astype(cache.keys.dtype), cache.pos)
    values = write(cache.values, v.astype(cache.values.dtype), cache.pos)
    new_cache = AttentionCache(keys=keys, values=values,
                               pos=cache.pos + seq_len)
    # True positions, so the bias is the same whether decoding or not.
    q_pos = cache.pos[:, None] + jnp.arange(seq_len)[None]     # [B, T]
    k_pos = jnp.arange(keys.shape[1])                          # [S=max_len]
    relative = k_pos[None, None, :] - q_pos[:, :, None]        # [B, T, S]
    buckets = causal_relative_position_bucket(
        relative, self.num_buckets, self.max_distance)
    # Causality also masks the not-yet-written cache slots (s > query pos).
    bias = jnp.where(visible(relative, self.window)[..., None],
                     self.relative_bias[buckets], _NEG_INF)    # [B, T, S, H]
    keys = keys.astype(self.dtype)
    values = values.astype(self.dtype)
    if seq_len == 1:
      # One query per sequence. A batched dot over (b, h) would first copy the
      # whole cache to [B, H, S, D], every step and every layer; instead read
      # it once in its stored layout, as [B, S, H*D] matrices, against the
      # query spread block-diagonally over [H*D, H] (the zero blocks cost
      # nothing that matters: the step is bound by reading the cache).
      eye = jnp.eye(self.num_heads, dtype=self.dtype)
      slots = keys.shape[1]
      q_blocks = (q[:, 0, :, :, None] * eye[:, None, :]).reshape(
          batch, self.width, self.num_heads)                   # [B, H*D, H]
      logits = jnp.einsum('bsk,bkh->bsh',
                          keys.reshape(batch, slots, self.width), q_blocks)
      logits = logits.astype(jnp.float32) * scale + bias[:, 0]  # [B, S, H]
      probs = jax.nn.softmax(logits, axis=1).astype(self.dtype)
      mixed = jnp.einsum('bsh,bsk->bhk', probs,
                         values.reshape(batch, slots, self.width))
      attended = jnp.sum(mixed.reshape(batch, self.num_heads, self.num_heads,
                                       head_dim) * eye[:, :, None], axis=2)
    else:
      logits = jnp.einsum('bthd,bshd->bhts', q, keys)
      logits = (logits.astype(jnp.float32) * scale
                + jnp.moveaxis(bias, -1, 1))
      probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
      attended = jnp.einsum('bhts,bshd->bthd', probs, values)
    out = self.out_proj(attended.reshape(batch, seq_len, self.width))
    return out, new_cache


class TransformerBlock(nn.Module):
  """Pre-norm block: x += attn(norm(x)); x += mlp(norm(x))."""
  width: int
  num_heads: int
  mlp_dim: int
  num_buckets: int = 32
  max_distance: int = 128
  window: int = 0
  dtype: common.Dtype = jnp.float32

  def setup(self) -> None:
    self.attn_norm = common.norm(self.dtype)
    self.attention = RelativeAttention(self.width, self.num_heads,
                                       self.num_buckets, self.max_distance,
                                       self.window, self.dtype)
    self.mlp_norm = common.norm(self.dtype)
    self.mlp = common.MLP(self.width, self.mlp_dim, self.dtype)

  def __call__(self, x: jax.Array, cache: AttentionCache | None = None,
               segments: jax.Array | None = None
               ) -> tuple[jax.Array, AttentionCache | None]:
    """[B, T, width] -> ([B, T, width], updated cache or None); segments
    [B, T] as `RelativeAttention`."""
    mixed, cache = self.attention(self.attn_norm(x), cache, segments)
    x = x + mixed.astype(x.dtype)
    x = x + self.mlp(self.mlp_norm(x)).astype(x.dtype)
    return x, cache
