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

import math

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

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


class RelativeAttention(nn.Module):
  """Causal multi-head self-attention with a T5 relative-position bias."""
  width: int
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  dtype: common.Dtype = jnp.float32

  def setup(self) -> None:
    self.q_proj = common.dense(self.width, self.dtype, use_bias=False)
    self.k_proj = common.dense(self.width, self.dtype, use_bias=False)
    self.v_proj = common.dense(self.width, self.dtype, use_bias=False)
    self.out_proj = common.dense(self.width, self.dtype, use_bias=False)
    self.relative_bias = self.param('relative_bias', nn.initializers.zeros,
                                    (self.num_buckets, self.num_heads),
                                    jnp.float32)

  def __call__(self, x: jax.Array, cache: AttentionCache | None = None
               ) -> tuple[jax.Array, AttentionCache | None]:
    """Attends causally over the chunk and, if given, the cached prefix.

    Args:
      x: [B, T, width]. Without a cache, positions are 0..T-1. With a cache,
        they are pos..pos+T-1 and keys/values are written at those slots;
        pos + T must not exceed max_len (not checked under jit).
      cache: this layer's KV cache or None.

    Returns:
      ([B, T, width], updated cache or None).
    """
    batch, seq_len, _ = x.shape
    head_dim = self.width // self.num_heads
    split = lambda y: y.reshape(batch, seq_len, self.num_heads, head_dim)
    q = split(self.q_proj(x))
    k = split(self.k_proj(x))
    v = split(self.v_proj(x))

    if cache is None:
      keys, values, new_cache = k, v, None
      q_pos = jnp.arange(seq_len)[None]                      # [1, T]
      k_pos = jnp.arange(seq_len)                            # [S=T]
    else:
      write = jax.vmap(
          lambda buf, new, p: jax.lax.dynamic_update_slice(buf, new, (p, 0, 0)))
      keys = write(cache.keys, k.astype(cache.keys.dtype), cache.pos)
      values = write(cache.values, v.astype(cache.values.dtype), cache.pos)
      new_cache = AttentionCache(keys=keys, values=values,
                                 pos=cache.pos + seq_len)
      q_pos = cache.pos[:, None] + jnp.arange(seq_len)[None]  # [B, T]
      k_pos = jnp.arange(keys.shape[1])                      # [S=max_len]

    # True positions, so the bias is the same whether decoding or not.
    relative = k_pos[None, None, :] - q_pos[:, :, None]      # [B|1, T, S]
    buckets = causal_relative_position_bucket(
        relative, self.num_buckets, self.max_distance)
    bias = jnp.moveaxis(self.relative_bias[buckets], -1, 1)  # [B|1, H, T, S]
    # Causality also masks the not-yet-written cache slots (s > query pos).
    mask = (relative <= 0)[:, None]                          # [B|1, 1, T, S]

    logits = jnp.einsum('bthd,bshd->bhts', q, keys.astype(q.dtype))
    logits = logits.astype(jnp.float32) / math.sqrt(head_dim) + bias
    logits = jnp.where(mask, logits, _NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    attended = jnp.einsum('bhts,bshd->bthd', probs, values.astype(self.dtype))
    out = self.out_proj(attended.reshape(batch, seq_len, self.width))
    return out, new_cache


class TransformerBlock(nn.Module):
  """Pre-norm block: x += attn(norm(x)); x += mlp(norm(x))."""
  width: int
  num_heads: int
  mlp_dim: int
  num_buckets: int = 32
  max_distance: int = 128
  dtype: common.Dtype = jnp.float32

  def setup(self) -> None:
    self.attn_norm = common.norm(self.dtype)
    self.attention = RelativeAttention(self.width, self.num_heads,
                                       self.num_buckets, self.max_distance,
                                       self.dtype)
    self.mlp_norm = common.norm(self.dtype)
    self.mlp = common.MLP(self.width, self.mlp_dim, self.dtype)

  def __call__(self, x: jax.Array, cache: AttentionCache | None = None
               ) -> tuple[jax.Array, AttentionCache | None]:
    """[B, T, width] -> ([B, T, width], updated cache or None)."""
    mixed, cache = self.attention(self.attn_norm(x), cache)
    x = x + mixed.astype(x.dtype)
    x = x + self.mlp(self.mlp_norm(x)).astype(x.dtype)
    return x, cache
