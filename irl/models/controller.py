"""The controller decoder: a hypernetwork from a latent code z to U (docs/method.md §6.6).

It turns z_t into the residual-stream edit e ← e + U_t e of the base model:
rank-r (U = A Bᵀ, the gridworld) or full (U ∈ R^{n_e×n_e}, the ant). The same
decoder serves ground-truth controllers (z = one-hot(subgoal), β ≡ 1), the
metacontroller and internal RL; `Intervention` carries its output into
`BaseModel.upper`.

Initialisation: the layer that emits B (and the full U) starts at zero by
default (`init_scale` = 0), so a fresh decoder is exactly the identity edit;
A starts random so that the gradient with respect to B is non-zero from the
first step (with A = B = 0 both gradients would vanish).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from irl.models.intervention import HyperFull, HyperLowRank, Intervention


class ControllerDecoder(nn.Module):
  """z [..., n_z] -> controller U, as an `Intervention` at `layer`.

  Attributes:
    width: residual-stream width n_e.
    rank: r for U = A Bᵀ; None for a full n_e×n_e matrix.
    hidden: hidden width of the hypernetwork (0: a linear map of z).
    init_scale: std of the layer that emits B (or the full U), relative to
      A's 1/sqrt(width). 0 (default) starts every controller at U = 0, the
      identity edit, whatever z is; > 0 makes U depend on z from step 0.
  """
  width: int
  rank: int | None = 16
  hidden: int = 32
  init_scale: float = 0.0

  @nn.compact
  def __call__(self, z: jax.Array, factored: bool = False
               ) -> tuple[jax.Array, ...] | HyperLowRank | HyperFull:
    """Returns (A, B) [..., n_e, r] each, or (U,) [..., n_e, n_e].

    factored=True returns the same U as a `HyperLowRank` (or `HyperFull`):
    the hidden code h and the last layer's weights, so that applying U (and
    its gradient) never builds the per-step factors.
    """
    h = z
    if self.hidden:
      h = nn.relu(nn.Dense(self.hidden, name='hidden')(z))
    # One row binds the parameters; the weights themselves are handed on, and
    # the factored classes are the one place U or A, B are built from them.
    probe = jnp.zeros((1, h.shape[-1]), h.dtype)
    scale = 1.0 / jnp.sqrt(self.width)
    last_init = (nn.initializers.normal(self.init_scale * scale)
                 if self.init_scale else nn.initializers.zeros)
    if self.rank is None:
      u_layer = nn.Dense(self.width * self.width, kernel_init=last_init,
                         name='u')
      u_layer(probe)
      pu = u_layer.variables['params']
      full = HyperFull(h=h, kernel=pu['kernel'], bias=pu['bias'])
      return full if factored else (full.matrix(),)
    a_layer = nn.Dense(self.width * self.rank, name='a',
                       kernel_init=nn.initializers.normal(scale))
    b_layer = nn.Dense(self.width * self.rank, kernel_init=last_init,
                       name='b')
    a_layer(probe)
    b_layer(probe)
    pa, pb = a_layer.variables['params'], b_layer.variables['params']
    hyper = HyperLowRank(h=h, a_kernel=pa['kernel'], a_bias=pa['bias'],
                         b_kernel=pb['kernel'], b_bias=pb['bias'],
                         rank=self.rank)
    return hyper if factored else hyper.factors()

  @nn.nowrap
  def as_intervention(self, layer: int,
                      factors: tuple[jax.Array, ...] | HyperLowRank
                      | HyperFull
                      ) -> Intervention:
    """Wraps the decoder output [B, T, ...] for `BaseModel.upper`."""
    return Intervention.from_factors(layer, factors)
