"""Auto-resetting gridworld-pinpad for fast batched stepping.

`AutoReset` replaces a finished episode by a fresh one inside `step`, with
its randomness drawn in counter mode by `threefry2x32_block`. It is the
environment of the throughput benchmark (benchmarks/env_throughput.py,
against NAVIX); the phases step through `irl.acting`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from irl.envs.gridworld_pinpad import (EnvParams, EnvState, Layout, advance,
                                       init_state, observe, reset,
                                       tasks_array)

_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32_block(key_data: jax.Array, counter: jax.Array) -> jax.Array:
  """[2] uint32 = Threefry-2x32(key_data [2] uint32, (counter, 0)), 20 rounds.

  Bit-identical to `jax.extend.random.threefry_2x32(key_data, [counter, 0])`
  (tests/test_gridworld.py checks it), written out as plain elementwise ops:
  JAX lowers threefry on CPU to an XLA while loop, which XLA cannot fuse
  with the ops around it. Unrolled, one block per environment and step
  fuses into the auto-reset's selects.
  """
  k0, k1 = key_data[0], key_data[1]
  ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
  x0, x1 = counter + ks[0], ks[1]
  for i in range(5):
    for r in _THREEFRY_ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = ((x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r))) ^ x0
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
  return jnp.stack([x0, x1])


class AutoReset:
  """Wraps `step` so a finished episode is replaced by a fresh one.

  Under `vmap` a conditional reset becomes a select, so the reset runs for every
  environment on every step. With `layout_pool` (from `sample_layout_pool`) a
  reset is a gather from the pool plus a random task, which keeps stepping
  cheap; without it every reset draws a fresh layout by rejection sampling.
  The returned observation after `done` is the first one of the new episode.

  Episode k of an environment (k = 0 at `reset`, +1 per auto-reset) is drawn
  from its state key in counter mode (Random123 style): one threefry block on
  (key, k), rather than advancing the key with `split` and then drawing with
  `bits`. Under `vmap` that draw runs on every step, and on CPU each threefry
  call is a small XLA loop: one block instead of three, written out as
  elementwise ops (`threefry2x32_block`) so XLA fuses it, makes stepping
  ~1.2x faster at 8192 environments (benchmarks/env_throughput.py). A pooled
  reset takes its pool row and task from the block's two words (uniform up to
  a modulo bias below size / 2**32); an unpooled one uses them as the key of
  `reset`.
  """

  def __init__(self, params: EnvParams, layout_pool: Layout | None = None):
    self.params = params
    self.layout_pool = layout_pool
    if layout_pool is not None:
      # One row per layout, [grid | colour_cell | agent_cell], so a reset is
      # one gather; likewise one row per task, [task | task_len].
      self._pool_rows = jnp.concatenate(
          [jnp.asarray(layout_pool.grid, jnp.int32),
           jnp.asarray(layout_pool.colour_cell, jnp.int32),
           jnp.asarray(layout_pool.agent_cell, jnp.int32)[:, None]], axis=1)
      table, lengths = tasks_array(params)
      self._task_rows = np.concatenate([table, lengths[:, None]], axis=1)

  def reset(self, key: jax.Array) -> tuple[EnvState, jax.Array]:
    state = self._fresh_state(key, jnp.int32(0))
    return state, observe(state.grid, state.agent, self.params)

  @staticmethod
  def _draw(key: jax.Array, counter: jax.Array) -> jax.Array:
    """[2] uint32: the `counter`-th draw of `key`'s stream (one block)."""
    data = jax.random.key_data(key)
    if data.shape == (2,):   # threefry2x32 keys: the block itself
      return threefry2x32_block(data, counter.astype(jnp.uint32))
    return jax.random.bits(jax.random.fold_in(key, counter), (2,), jnp.uint32)

  def _fresh_state(self, key: jax.Array, episode: jax.Array) -> EnvState:
    """Episode `episode` of the environment whose state key is `key`."""
    params = self.params
    bits = self._draw(key, episode)
    if self.layout_pool is None:
      state = reset(jax.random.wrap_key_data(bits, impl='threefry2x32'),
                    params)[0]
    else:
      n, o = params.num_cells, params.num_colours
      size = self._pool_rows.shape[0]
      row = self._pool_rows[(bits[0] % size).astype(jnp.int32)]
      task_id = (bits[1] % params.num_tasks).astype(jnp.int32)
      task_row = jnp.asarray(self._task_rows)[task_id]
      layout = Layout(grid=row[:n], colour_cell=row[n:n + o],
                      agent_cell=row[n + o])
      state = init_state(key, layout, task_row[:-1], task_row[-1], task_id,
                         params)
    return state.replace(key=key, episode=episode)

  def step(self, state: EnvState, action: jax.Array
           ) -> tuple[EnvState, jax.Array, jax.Array, jax.Array, dict]:
    state, reward, done, info = advance(state, action, self.params)
    fresh = self._fresh_state(state.key, state.episode + 1)
    state = jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh, state)
    # One observation of the selected state, rather than one of each state
    # and a select of the two.
    obs = observe(state.grid, state.agent, self.params)
    return state, obs, reward, done, info
