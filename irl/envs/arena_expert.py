"""The arena as a Brax `Env` for training its expert with Brax's PPO
(docs/method.md §3).

The expert sees more than the base model will: the arena's observation plus,
per grid cell, a one-hot of the grid-level shortest-path move towards the
next colour of its task (walls and every other colour are obstacles;
`gridworld_expert.direction_field`): G²·4 values; and, read from that field
for it, the move at the cell its centre is in (4 more), so a small MLP need
not learn to index the field by its own position. It is rewarded for its
velocity along that move at the cell it stands in, `progress_weight` ·
(v · d), plus the task's sparse reward (1 on success).

Brax's own auto-reset returns every environment to its first state, the same
layout every episode; here an episode that ends is replaced, inside `step`,
by a fresh one (a new layout and task from the episode's key), so PPO sees
as many layouts as episodes. `done` is 1 on the step an episode ends, whose
observation is then the new episode's first, as with Brax's wrapper.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from brax.envs import base as brax_base

from irl.envs import arena_pinpad as ap
from irl.envs import gridworld_expert

# The gridworld's moves UP, DOWN, LEFT, RIGHT on the arena's x, y (row 0 at +y).
_MOVE_XY = jnp.array([[0.0, 1.0], [0.0, -1.0], [-1.0, 0.0], [1.0, 0.0]])


@flax.struct.dataclass
class ExpertState:
  arena: ap.ArenaState
  dist: jax.Array          # [O, N] grid distance of every cell to each colour


def _field(state: ExpertState, params: ap.ArenaParams) -> jax.Array:
  """[N, 4] shortest-path move towards the current target (none in the
  wall cells, where the body never stands)."""
  a = state.arena
  target = a.task[jnp.minimum(a.task_pos, a.task.shape[-1] - 1)]
  field = gridworld_expert.direction_field(
      a.grid, target, state.dist[target], params.grid_params())
  return field * (a.grid < params.num_colours)[:, None]


class ExpertEnv(brax_base.Env):
  """One arena episode at a time (Brax's wrappers batch it)."""

  def __init__(self, params: ap.ArenaParams, progress_weight: float = 1.0):
    self._params = params
    self._progress_weight = progress_weight

  @property
  def params(self) -> ap.ArenaParams:
    return self._params

  @property
  def observation_size(self) -> int:
    return self._params.obs_dim + 4 * (self._params.grid_size ** 2 + 1)

  @property
  def action_size(self) -> int:
    return self._params.action_dim

  @property
  def backend(self) -> str:
    return 'mjx'

  def _start(self, key: jax.Array, episode: jax.Array,
             task_id: Any = None) -> tuple[ExpertState, jax.Array]:
    arena, obs = ap.reset(key, self._params, task_id)
    arena = arena.replace(episode=episode)
    state = ExpertState(arena, gridworld_expert.distance_fields(
        arena.grid, arena.colour_cell, self._params.grid_params()))
    return state, self.observe(state, obs)

  def observe(self, state: ExpertState, obs: jax.Array) -> jax.Array:
    """The arena's observation, the expert's direction field and the move at
    the body's cell."""
    field = _field(state, self._params)
    here = field[ap.nearest_cell(state.arena.xy, self._params)]
    return jnp.concatenate([obs, field.reshape(-1), here])

  def reset(self, rng: jax.Array, task_id: Any = None) -> brax_base.State:
    state, obs = self._start(rng, jnp.int32(0), task_id)
    zero = jnp.float32(0)
    return brax_base.State(state, obs, zero, zero,
                           {'success': zero, 'progress': zero,
                            'timeout': zero})

  def step(self, state: brax_base.State, action: jax.Array
           ) -> brax_base.State:
    p = self._params
    old = state.pipeline_state
    move = _field(old, p)[ap.nearest_cell(old.arena.xy, p)] @ _MOVE_XY
    arena, obs, reward, done, info = ap.step(old.arena, action, p)
    progress = jnp.dot(arena.xy - old.arena.xy, move) / ap.control_dt(p)
    stepped = ExpertState(arena, old.dist)
    # The episode's key is never advanced: the next one folds in its number.
    episode = arena.episode + 1
    fresh, fresh_obs = self._start(
        jax.random.fold_in(arena.key, episode), episode)
    new = jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh, stepped)
    obs = jnp.where(done, fresh_obs, self.observe(stepped, obs))
    return state.replace(
        pipeline_state=new, obs=obs,
        reward=self._progress_weight * progress + reward,
        done=done.astype(jnp.float32),
        metrics={'success': reward, 'progress': progress,
                 'timeout': info['timeout'].astype(jnp.float32)})
