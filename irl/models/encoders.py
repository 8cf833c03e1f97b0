"""Observation encoders of the base model (the paper leaves the encoder open).

- `linear`: a dense map of the raw observation to the residual width.
- `egocentric_grid`: for the gridworld's one-hot observation. The grid is first
  re-centred on the agent (a parameter-free gather): a (2G−1)×(2G−1) window with
  the agent in the middle, each cell holding the object channels plus an
  "outside the grid" channel, then a dense map to the residual width. The input
  is the same observation, only laid out so that "colour c is two cells up" is
  one feature, which makes the next move a near-linear function of the input
  and cuts the data a small model needs to learn to navigate.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from irl.models import common

ENCODERS = ('linear', 'egocentric_grid')


@functools.lru_cache(maxsize=None)
def egocentric_table(grid_size: int) -> np.ndarray:
  """[N, (2G−1)²] source cell of each window offset per agent cell; −1 outside."""
  g, span = grid_size, 2 * grid_size - 1
  table = np.full((g * g, span * span), -1, np.int32)
  for agent in range(g * g):
    ar, ac = divmod(agent, g)
    for i in range(span):
      for j in range(span):
        r, c = ar + i - (g - 1), ac + j - (g - 1)
        if 0 <= r < g and 0 <= c < g:
          table[agent, i * span + j] = r * g + c
  return table


def egocentric_view(obs: jax.Array, grid_size: int) -> jax.Array:
  """[..., G²·C] one-hot grid obs (agent = last channel) -> [..., (2G−1)²·C].

  Channels per window cell: the C−1 object channels, then 'outside the grid'.
  """
  n = grid_size * grid_size
  cells = obs.reshape(obs.shape[:-1] + (n, -1))
  objects, agent_plane = cells[..., :-1], cells[..., -1]
  agent = jnp.argmax(agent_plane, axis=-1)                   # [...]
  src = jnp.asarray(egocentric_table(grid_size))[agent]      # [..., W]
  inside = src >= 0
  window = jnp.take_along_axis(objects, jnp.maximum(src, 0)[..., None], axis=-2)
  window = window * inside[..., None].astype(obs.dtype)
  outside = (~inside)[..., None].astype(obs.dtype)
  view = jnp.concatenate([window, outside], axis=-1)
  return view.reshape(view.shape[:-2] + (-1,))


class ObservationEncoder(nn.Module):
  """obs [..., obs_dim] -> [..., width] in the compute dtype."""
  width: int
  kind: str = 'linear'
  grid_size: int = 7
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    if self.kind == 'egocentric_grid':
      obs = egocentric_view(obs, self.grid_size)
    elif self.kind != 'linear':
      raise ValueError(f'obs_encoder={self.kind!r} is not one of {ENCODERS}')
    return common.dense(self.width, self.dtype, name='dense')(obs)
