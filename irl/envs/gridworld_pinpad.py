"""Gridworld-pinpad (docs/method.md §2.1) as a pure-JAX environment.

A G×G grid holds O coloured cells, W wall cells and the agent. A task is a
sequence of colours to visit in order; a colour is *visited* when the agent
enters its cell from another cell. Visiting the next colour of the task advances
it, visiting any other colour fails the episode (reward 0), finishing the task
gives reward 1, and the episode times out after T steps.

Functions are pure and jittable: `reset(key, params) -> (state, obs)` and
`step(state, action, params) -> (state, obs, reward, done, info)`. `EnvParams`
is a pytree without leaves, so it can be passed straight to `jax.jit` and
`jax.vmap` (its fields are part of the compilation cache key).

Observation layout (`params.obs_dim` = G²·(O+W+1) = 637 values by default): the
grid in row-major cell order (cell = row·G + col, row 0 at the top), and per
cell O+W+1 channels `[colour 0 .. colour O-1, wall 0 .. wall W-1, agent]`. So
`obs.reshape(G, G, O+W+1)` is an image; channel `O+W` is the agent's one-hot.
The task is not part of the observation.

Reachability: a random layout can wall a colour off. `reset` resamples the
layout until every colour cell is adjacent to the free-cell component that
contains the agent. Then any colour can be reached from the start and from any
other colour without crossing a third colour, so every task (any order of
colours) is solvable, and the expert and its data never contain impossible
episodes. About 22% of uniform layouts at the default sizes are rejected (1.3
draws on average).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from irl.envs import pinpad_rules

# Action ids and their (row, col) displacement.
UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
NUM_ACTIONS = 4
_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))
EMPTY = -1  # grid value of a cell without colour or wall.


@flax.struct.dataclass
class EnvParams(pinpad_rules.PinpadParams):
  """Static environment parameters: `pinpad_rules.PinpadParams`' fields
  (grid size, colours, walls, T, tasks, rule limits) with the gridworld's
  defaults, plus the observation's sizes."""

  @property
  def num_channels(self) -> int:
    return self.num_colours + self.num_walls + 1

  @property
  def obs_dim(self) -> int:
    return self.num_cells * self.num_channels


@flax.struct.dataclass
class Layout:
  """Where things are. grid[c] is EMPTY, a colour id, or O + wall id."""
  grid: chex.Array        # [N] int32
  colour_cell: chex.Array  # [O] int32, cell index of each colour
  agent_cell: chex.Array   # [] int32, the agent's start cell


@flax.struct.dataclass
class EnvState:
  grid: chex.Array         # [N] int32
  colour_cell: chex.Array  # [O] int32
  agent: chex.Array        # [] int32 cell index
  task: chex.Array         # [max_task_len] int32, padded with -1
  task_len: chex.Array     # [] int32
  task_id: chex.Array      # [] int32 (-1 for a task given explicitly)
  task_pos: chex.Array     # [] int32, colours of the task done so far
  time: chex.Array         # [] int32, steps taken
  visits: chex.Array       # [max_visits] int32 visited colours, padded with -1
  num_visits: chex.Array   # [] int32
  done: chex.Array         # [] bool
  success: chex.Array      # [] bool
  key: chex.Array          # PRNG key, used by auto-reset (never advanced)
  episode: chex.Array      # [] int32, k-th episode of this env (AutoReset)


def neighbour_table(grid_size: int) -> np.ndarray:
  """[N, 4] cell reached by each action; a move off the grid stays put."""
  n = grid_size * grid_size
  table = np.zeros((n, NUM_ACTIONS), np.int32)
  for cell in range(n):
    r, c = divmod(cell, grid_size)
    for a, (dr, dc) in enumerate(_MOVES):
      rr, cc = r + dr, c + dc
      inside = 0 <= rr < grid_size and 0 <= cc < grid_size
      table[cell, a] = rr * grid_size + cc if inside else cell
  return table


def tasks_array(params: EnvParams) -> tuple[np.ndarray, np.ndarray]:
  """([num_tasks, max_task_len] padded with -1, [num_tasks] lengths)."""
  table = np.full((params.num_tasks, params.max_task_len), -1, np.int32)
  for i, task in enumerate(params.tasks):
    table[i, :len(task)] = task
  return table, np.array([len(t) for t in params.tasks], np.int32)


def free_component(grid: jax.Array, start: jax.Array,
                   params: EnvParams) -> jax.Array:
  """[N] bool: the empty cells connected to `start` (4-neighbourhood)."""
  nbr = jnp.asarray(neighbour_table(params.grid_size))
  free = grid == EMPTY
  reach0 = jnp.zeros_like(free).at[start].set(True)

  def body(carry):
    reach, _ = carry
    grown = (reach | reach[nbr].any(-1)) & free
    return grown, jnp.any(grown != reach)

  reach, _ = jax.lax.while_loop(lambda c: c[1], body, (reach0, jnp.bool_(True)))
  return reach


def layout_is_solvable(layout: Layout, params: EnvParams) -> jax.Array:
  """Every colour cell touches the free component of the agent's start cell."""
  nbr = jnp.asarray(neighbour_table(params.grid_size))
  reach = free_component(layout.grid, layout.agent_cell, params)
  return jnp.all(reach[nbr[layout.colour_cell]].any(-1))


def _draw_layout(key: jax.Array, params: EnvParams) -> Layout:
  o, w = params.num_colours, params.num_walls
  cells = jax.random.permutation(key, params.num_cells)[:o + w + 1]
  grid = jnp.full((params.num_cells,), EMPTY, jnp.int32)
  grid = grid.at[cells[:o + w]].set(jnp.arange(o + w, dtype=jnp.int32))
  return Layout(grid=grid, colour_cell=cells[:o].astype(jnp.int32),
                agent_cell=cells[o + w].astype(jnp.int32))


def sample_layout(key: jax.Array, params: EnvParams) -> Layout:
  """A uniform layout conditioned on being solvable (rejection sampling)."""
  def cond(carry):
    _, layout = carry
    return ~layout_is_solvable(layout, params)

  def body(carry):
    key, _ = carry
    key, sub = jax.random.split(key)
    return key, _draw_layout(sub, params)

  key, sub = jax.random.split(key)
  _, layout = jax.lax.while_loop(cond, body, (key, _draw_layout(sub, params)))
  return layout


def sample_layout_pool(key: jax.Array, params: EnvParams, size: int) -> Layout:
  """[size] solvable layouts, for cheap auto-resets under vmap."""
  return jax.jit(jax.vmap(functools.partial(sample_layout, params=params)))(
      jax.random.split(key, size))


@functools.lru_cache(maxsize=None)
def _cell_table(n_obj: int) -> np.ndarray:
  """[2 (n_obj + 1), n_obj + 1] one-hot rows of `observe`'s cell codes."""
  codes = np.arange(2 * (n_obj + 1))
  value, agent_here = codes % (n_obj + 1), codes // (n_obj + 1)
  table = np.zeros((codes.size, n_obj + 1), np.float32)
  table[codes, value - 1] = value > 0        # value 0 is EMPTY (-1) + 1
  table[:, n_obj] = agent_here
  return table


def observe(grid: jax.Array, agent: jax.Array, params: EnvParams,
            dtype: Any = jnp.float32) -> jax.Array:
  """[obs_dim] one-hot observation (layout in the module docstring).

  Also works batched: grid [..., N] and agent [...] broadcast against each
  other (e.g. one grid and the agent cells of a whole episode) and give
  [..., obs_dim].
  """
  n_obj = params.num_colours + params.num_walls
  grid = jnp.asarray(grid)
  agent = jnp.asarray(agent)
  lead = jnp.broadcast_shapes(grid.shape[:-1], agent.shape)
  channel = jnp.arange(n_obj + 1, dtype=grid.dtype)
  cell = jnp.arange(params.num_cells, dtype=agent.dtype)
  one, zero = jnp.ones((), dtype), jnp.zeros((), dtype)
  # Both forms below keep XLA's loop over the output free of div/mod index
  # arithmetic (a flat [obs_dim] loop over a [N, channels] one-hot is not).
  if lead == grid.shape[:-1]:
    # One observation per grid: each cell's 13 values are a row of a small
    # table, indexed by (grid value + 1) + 13 * (agent here). A gather of
    # rows is ~1.45x faster on CPU than building the one-hot by compares
    # (benchmarks/env_throughput.py at 8192 environments).
    code = (grid + 1 + (n_obj + 1)
            * (cell == agent[..., None]).astype(grid.dtype))
    return jnp.asarray(_cell_table(n_obj), dtype)[code].reshape(
        *lead, params.obs_dim)
  # Many agent cells per grid: the layout part once per grid, then a flat
  # loop that writes one extra 1 at the agent's index.
  layout = jnp.where(grid[..., None] == channel, one, zero).reshape(
      *grid.shape[:-1], params.obs_dim)
  index = agent * (n_obj + 1) + n_obj
  return jnp.where(jnp.arange(params.obs_dim) == index[..., None], one, layout)


def init_state(key: jax.Array, layout: Layout, task: jax.Array,
               task_len: jax.Array, task_id: jax.Array,
               params: EnvParams) -> EnvState:
  return EnvState(
      grid=layout.grid, colour_cell=layout.colour_cell,
      agent=layout.agent_cell, task=task, task_len=task_len,
      task_id=task_id, task_pos=jnp.int32(0), time=jnp.int32(0),
      visits=jnp.full((params.max_visits,), -1, jnp.int32),
      num_visits=jnp.int32(0), done=jnp.bool_(False),
      success=jnp.bool_(False), key=key, episode=jnp.int32(0))


def reset(key: jax.Array, params: EnvParams,
          task_id: jax.Array | int | None = None) -> tuple[EnvState, jax.Array]:
  """New episode: a solvable layout and a task (uniform, or `task_id`).

  To run a task that is not in the table, give params whose table holds it:
  `params.replace_tasks([(0, 1, 2, 3)])`.
  """
  k_layout, k_task, k_state = jax.random.split(key, 3)
  table, lengths = tasks_array(params)
  if task_id is None:
    task_id = jax.random.randint(k_task, (), 0, params.num_tasks)
  task_id = jnp.asarray(task_id, jnp.int32)
  layout = sample_layout(k_layout, params)
  state = init_state(k_state, layout, jnp.asarray(table)[task_id],
                     jnp.asarray(lengths)[task_id], task_id, params)
  return state, observe(state.grid, state.agent, params)


def current_subgoal(state: EnvState, params: EnvParams) -> jax.Array:
  """[] int32 subgoal id being pursued (colour // subgoal_size); -1 when done."""
  pos = jnp.minimum(state.task_pos, state.task.shape[-1] - 1)
  colour = jnp.take(state.task, pos, axis=-1)
  finished = state.task_pos >= state.task_len
  return jnp.where(finished, -1, colour // params.subgoal_size)


def step(state: EnvState, action: jax.Array, params: EnvParams
         ) -> tuple[EnvState, jax.Array, jax.Array, jax.Array, dict]:
  """One move. A finished episode stays finished (reward 0, done True)."""
  new_state, reward, done, info = advance(state, action, params)
  obs = observe(new_state.grid, new_state.agent, params)
  return new_state, obs, reward, done, info


def advance(state: EnvState, action: jax.Array, params: EnvParams
            ) -> tuple[EnvState, jax.Array, jax.Array, dict]:
  """`step` without the observation: (state, reward, done, info)."""
  nbr = jnp.asarray(neighbour_table(params.grid_size))
  target = nbr[state.agent, action]
  cell = state.grid[target]
  blocked = cell >= params.num_colours  # a wall
  new_agent = jnp.where(blocked, state.agent, target)
  moved = (new_agent != state.agent) & ~state.done
  # When the agent moved it stands on `target`, so `cell` is what it entered.
  is_visit = moved & (cell >= 0) & (cell < params.num_colours)
  colour = jnp.where(is_visit, cell, -1)

  changes, reward, done, info = pinpad_rules.visit_rules(
      state, is_visit, colour, max_visits=params.max_visits,
      max_steps=params.max_steps,
      terminate_on_wrong_colour=params.terminate_on_wrong_colour)
  new_state = state.replace(
      agent=jnp.where(state.done, state.agent, new_agent), **changes)
  info = {'subgoal': current_subgoal(new_state, params), **info}
  return new_state, reward, done, info


def params_from_config(env_config: Any, tasks: Sequence[Sequence[int]] | None
                       = None, **overrides) -> EnvParams:
  """EnvParams from the `env` block of configs/gridworld.py, validated."""
  return pinpad_rules.params_from_config(EnvParams, env_config, tasks,
                                         **overrides)
