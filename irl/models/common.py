"""Pieces shared by both backbones: initialiser, norm and MLP."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# "Variance scaling 0.1" (paper §4), used for every dense kernel.
KERNEL_INIT = nn.initializers.variance_scaling(0.1, 'fan_in',
                                               'truncated_normal')

Dtype = Any


def dense(features: int, dtype: Dtype, use_bias: bool = True,
          name: str | None = None) -> nn.Dense:
  """A float32-parameter Dense layer computing in `dtype`."""
  return nn.Dense(features, use_bias=use_bias, kernel_init=KERNEL_INIT,
                  dtype=dtype, param_dtype=jnp.float32, name=name)


def norm(dtype: Dtype, name: str | None = None) -> nn.RMSNorm:
  """RMSNorm: what both T5 (the Transformer's bias scheme) and Griffin use."""
  return nn.RMSNorm(epsilon=1e-6, dtype=dtype, param_dtype=jnp.float32,
                    name=name)


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
