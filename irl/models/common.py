"""Pieces shared by the models: initialisers, norm, the Gaussian head of the
latent codes, reading the residual stream, and per-episode selection."""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# "Variance scaling 0.1" (docs/method.md §4), used for every dense kernel.
KERNEL_INIT = nn.initializers.variance_scaling(0.1, 'fan_in',
                                               'truncated_normal')

Dtype = Any


def dense(features: int, dtype: Dtype, use_bias: bool = True,
          name: str | None = None) -> nn.Dense:
  """A float32-parameter Dense layer computing in `dtype`."""
  return nn.Dense(features, use_bias=use_bias, kernel_init=KERNEL_INIT,
                  dtype=dtype, param_dtype=jnp.float32, name=name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def rms_norm(x: jax.Array, scale: jax.Array, epsilon: float,
             dtype: Dtype = None) -> jax.Array:
  """x / sqrt(mean(x², -1) + eps) * scale, statistics in float32.

  Same values as `flax.linen.RMSNorm`. The custom gradient keeps only x and
  the per-row factor [..., 1] for the backward pass (autodiff of the flax
  formulation also keeps x-sized broadcasts of the factor and of
  factor * scale), and computes it in two passes over x.

  Args:
    x: [..., features].
    scale: [features] float32.
    epsilon: added to the mean square.
    dtype: of the result; None for x.dtype.

  Returns:
    [..., features].
  """
  return _rms_norm_fwd(x, scale, epsilon, dtype)[0]


def _rms_norm_fwd(x, scale, epsilon, dtype):
  x32 = x.astype(jnp.float32)
  inv = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + epsilon)
  y = (x32 * (inv * scale)).astype(dtype or x.dtype)
  return y, (x, inv, scale)


def _rms_norm_bwd(epsilon, dtype, res, g):
  del epsilon, dtype
  x, inv, scale = res
  x32, gs = x.astype(jnp.float32), g.astype(jnp.float32) * scale
  # d/dx [x * inv]: inv * gs - x * inv^3 * mean(gs * x).
  proj = jnp.mean(gs * x32, axis=-1, keepdims=True) * (inv * inv * inv)
  dx = (inv * gs - x32 * proj).astype(x.dtype)
  rows = tuple(range(x.ndim - 1))
  dscale = jnp.sum(g.astype(jnp.float32) * x32 * inv, axis=rows)
  return dx, dscale


rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


class RMSNorm(nn.Module):
  """RMSNorm with a learned per-feature `scale` (ones at init), float32
  statistics, output in `dtype`; the parameters of `flax.linen.RMSNorm`."""
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[..., features] -> [..., features] in `dtype`."""
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],),
                       jnp.float32)
    return rms_norm(x, scale, self.epsilon, self.dtype)


def norm(dtype: Dtype, name: str | None = None) -> RMSNorm:
  """RMSNorm: what both T5 (the Transformer's bias scheme) and Griffin use."""
  return RMSNorm(epsilon=1e-6, dtype=dtype, name=name)


class MLP(nn.Module):
  """Position-wise ReLU MLP: width -> mlp_dim -> width."""
  width: int
  mlp_dim: int
  dtype: Dtype = jnp.float32

  def setup(self) -> None:
    self.hidden = dense(self.mlp_dim, self.dtype)
    self.out = dense(self.width, self.dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """[..., width] -> [..., width]."""
    return self.out(nn.relu(self.hidden(x)))


def read_residual(e: jax.Array) -> jax.Array:
  """e / rms(e) in float32: how every component that reads the residual
  stream (metacontroller, CompILE, the RL policy) sees it."""
  e = e.astype(jnp.float32)
  return e * jax.lax.rsqrt(jnp.mean(jnp.square(e), -1, keepdims=True) + 1e-6)


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """KL(N(μ, diag σ²) ‖ N(0, I)), summed over the last axis (nats)."""
  return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var,
                       axis=-1)


# Latent-code heads (metacontroller, CompILE): the output layer starts small,
# so μ ≈ 0 and log σ² ≈ 0 (the prior N(0, I)) at initialisation.
LOG_VAR_MIN = -10.0
LOG_VAR_MAX = 5.0
SMALL_INIT = nn.initializers.variance_scaling(0.01, 'fan_in',
                                              'truncated_normal')


def gaussian_head(x: jax.Array, hidden: int, latent_dim: int
                  ) -> tuple[jax.Array, jax.Array]:
  """[..., n] -> (μ, log σ²) [..., latent_dim]: one hidden ReLU layer, then a
  small-init linear map; log σ² clipped. Call it inside an `@nn.compact`
  method: its layers ('hidden', 'output') are the caller's."""
  x = nn.relu(nn.Dense(hidden, name='hidden')(x))
  out = nn.Dense(2 * latent_dim, kernel_init=SMALL_INIT, name='output')(x)
  mean, log_var = jnp.split(out, 2, -1)
  return mean, jnp.clip(log_var, LOG_VAR_MIN, LOG_VAR_MAX)


def select_where(mask: jax.Array, new: Any, old: Any) -> Any:
  """Leaf-wise where(mask, new, old) with mask [B] on the leading axis."""
  def sel(a, b):
    return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)
  return jax.tree.map(sel, new, old)
