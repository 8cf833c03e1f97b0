"""The internal-RL policy π(z_t | e_{1:t}) (docs/method.md §7).

One Hawk layer (RG-LRU block, irl/models/hawk.py) over the residuals e_t read
at the agent's decision steps (where the switching gate fired), and a
diagonal Gaussian head over the latent code z ∈ R^{n_z}. One code path serves
the rollout (one decision at a time with a `RecurrentCache`) and the update
(all decisions of an episode in parallel, no cache): Hawk is causal, so
padding after an episode's last decision never reaches a real one.

Choices where the paper is silent:
- Input: e_t / rms(e_t) (as the metacontroller reads the stream), then a
  dense map to the policy width.
- Head: RMSNorm, then Dense -> (μ, log σ); its kernel starts small, so the
  initial policy is close to N(0, σ_0² I) with log σ_0 = `init_log_std`
  (0: the metacontroller's prior N(0, I), from which its decoder learned).
  log σ is clipped to [-5, 2].
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from irl.config.checks import LOG_STD_MAX, LOG_STD_MIN
from irl.models import common
from irl.models.hawk import HawkBlock, RecurrentCache, init_recurrent_cache
from irl.models.common import SMALL_INIT, read_residual


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
  """Sizes of the policy (defaults: docs/method.md §7).

  Attributes:
    latent_dim: n_z.
    width: Hawk width (paper: 256).
    num_heads: RG-LRU gate blocks (divides width).
    mlp_dim: the Hawk block's MLP width.
    conv_width: temporal Conv1D width of the Hawk block.
    init_log_std: log σ of the initial Gaussian.
  """
  latent_dim: int = 8
  width: int = 256
  num_heads: int = 4
  mlp_dim: int = 512
  conv_width: int = 4
  init_log_std: float = 0.0


class LatentPolicy(nn.Module):
  """e_{1:K} [B, K, n_e] at decision steps -> Gaussian over z [B, K, n_z]."""
  config: PolicyConfig

  @nn.compact
  def __call__(self, e: jax.Array, cache: RecurrentCache | None = None
               ) -> tuple[jax.Array, jax.Array, RecurrentCache | None]:
    """Returns (mean [B, K, n_z], log_std [B, K, n_z], cache or None)."""
    c = self.config
    x = common.dense(c.width, jnp.float32, name='input')(read_residual(e))
    x, cache = HawkBlock(c.width, c.num_heads, c.mlp_dim, c.conv_width,
                         name='hawk')(x, cache)
    h = common.RMSNorm(name='norm')(x)
    out = nn.Dense(2 * c.latent_dim, kernel_init=SMALL_INIT, name='head')(h)
    mean, log_std = jnp.split(out, 2, -1)
    log_std = jnp.clip(log_std + c.init_log_std, LOG_STD_MIN, LOG_STD_MAX)
    return mean, log_std, cache

  @nn.nowrap
  def initial_cache(self, batch_size: int) -> RecurrentCache:
    return init_recurrent_cache(batch_size, self.config.width,
                                self.config.conv_width)


def gaussian_log_prob(z: jax.Array, mean: jax.Array, log_std: jax.Array
                      ) -> jax.Array:
  """log N(z; μ, diag σ²), summed over the last axis."""
  return jnp.sum(-0.5 * jnp.square((z - mean) * jnp.exp(-log_std))
                 - log_std - 0.5 * jnp.log(2 * jnp.pi), -1)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
  """Entropy of diag N(·, σ²), summed over the last axis."""
  return jnp.sum(log_std + 0.5 * (1.0 + jnp.log(2 * jnp.pi)), -1)
