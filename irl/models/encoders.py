"""Observation encoders of the base model (the paper leaves the encoder open).

- `linear`: a dense map of the raw observation to the residual width.
- `egocentric_grid`: for the gridworld's one-hot observation. The grid is first
  re-centred on the agent (a parameter-free gather): a (2G−1)×(2G−1) window with
  the agent in the middle, each cell holding the object channels plus an
  "outside the grid" channel, then a dense map to the residual width. The input
  is the same observation, only laid out so that "colour c is two cells up" is
  one feature, which makes the next move a near-linear function of the input
  and cuts the data a small model needs to learn to navigate.

  The dense map of the window is computed without building the window
  (`egocentric_dense`): every object channel of the gridworld (each colour,
  each wall) is set in at most one cell, so the product is a sum of one kernel
  row per object plus a per-agent-cell table of the "outside" rows. Same
  parameters and values as `egocentric_view(obs) @ kernel`; forward +
  backward ~4x faster at the cpu preset's shapes, and the whole cpu training
  step 1.11x faster (6.83 -> 7.59 steps/s). `egocentric_view` stays the
  definition of the window and of the kernel's row order (tests compare
  against it).
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


@functools.lru_cache(maxsize=None)
def egocentric_offsets(grid_size: int) -> tuple[np.ndarray, np.ndarray]:
  """([N, N] window offset of cell n seen from agent cell a,
  [N, (2G−1)²] 1.0 where a window offset is outside the grid)."""
  table = egocentric_table(grid_size)
  n = grid_size * grid_size
  offsets = np.zeros((n, n), np.int32)
  for agent in range(n):
    inside = np.nonzero(table[agent] >= 0)[0]
    offsets[agent, table[agent, inside]] = inside
  return offsets, (table < 0).astype(np.float32)


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


def egocentric_dense(obs: jax.Array, kernel: jax.Array,
                     grid_size: int) -> jax.Array:
  """`egocentric_view(obs, G) @ kernel` without building the window.

  Exact for observations in which every object channel is set in at most one
  cell (the gridworld: each colour and each wall has its own channel).

  Args:
    obs: [..., G²·C] one-hot grid observation, agent = last channel.
    kernel: [(2G−1)²·C, width], rows in `egocentric_view`'s order.
    grid_size: G.

  Returns:
    [..., width] float32.
  """
  n = grid_size * grid_size
  cells = obs.reshape(obs.shape[:-1] + (n, -1))
  objects, agent_plane = cells[..., :-1], cells[..., -1]      # [..., N, C−1]
  num_channels = cells.shape[-1]
  offsets, outside = egocentric_offsets(grid_size)
  agent = jnp.argmax(agent_plane, axis=-1)                   # [...]
  cell_of = jnp.argmax(objects, axis=-2)                      # [..., C−1]
  present = jnp.max(objects, axis=-2).astype(jnp.float32)    # [..., C−1]
  offset = jnp.asarray(offsets)[agent[..., None], cell_of]    # [..., C−1]
  rows = offset * num_channels + jnp.arange(num_channels - 1)
  kernel = jnp.asarray(kernel, jnp.float32)   # params may be NumPy arrays
  from_objects = jnp.einsum('...k,...kw->...w', present, kernel[rows])
  outside_rows = kernel.reshape(outside.shape[1], num_channels, -1)[:, -1]
  from_outside = jnp.asarray(outside) @ outside_rows          # [N, width]
  return from_objects + from_outside[agent]


class EgocentricDense(nn.Module):
  """Dense map of the egocentric window: the parameters of `nn.Dense` on
  `egocentric_view(obs)` (kernel [(2G−1)²·C, width], bias), computed by
  `egocentric_dense`."""
  features: int
  grid_size: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    span = 2 * self.grid_size - 1
    channels = obs.shape[-1] // (self.grid_size * self.grid_size)
    kernel = self.param('kernel', common.KERNEL_INIT,
                        (span * span * channels, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,),
                      jnp.float32)
    return (egocentric_dense(obs, kernel, self.grid_size) + bias).astype(
        self.dtype)


class ObservationEncoder(nn.Module):
  """obs [..., obs_dim] -> [..., width] in the compute dtype."""
  width: int
  kind: str = 'linear'
  grid_size: int = 7
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    if self.kind == 'egocentric_grid':
      return EgocentricDense(self.width, self.grid_size, self.dtype,
                             name='dense')(obs)
    if self.kind != 'linear':
      raise ValueError(f'obs_encoder={self.kind!r} is not one of {ENCODERS}')
    return common.dense(self.width, self.dtype, name='dense')(obs)
