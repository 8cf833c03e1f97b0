"""Shortest-path expert for gridworld-pinpad (PAPER.md §3).

The expert heads for the next colour of its task along a shortest path in which
walls and every other colour cell are obstacles (entering another colour would
end the episode), choosing uniformly among optimal moves. With probability ε
the move is replaced by a uniformly random move that does not end the episode
and keeps the target reachable (never into a colour that is not the current
target, nor into a pocket of free cells sealed off by a colour; bumping into a
wall or the edge is allowed).

Colours never move, so the distance fields to all O colours are computed once
per episode (`distance_fields`) and each step is a gather.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from irl.envs import gridworld_pinpad as gw

UNREACHABLE = 10_000


def distance_fields(grid: jax.Array, colour_cell: jax.Array,
                    params: gw.EnvParams) -> jax.Array:
  """[O, N] int32 shortest-path distance from each cell to each colour.

  Paths run over empty cells only and end on the colour's cell (distance 0).
  Cells that are not empty hold UNREACHABLE (except the target itself).
  """
  nbr = jnp.asarray(gw.neighbour_table(params.grid_size))
  n = params.num_cells
  free = grid == gw.EMPTY
  is_target = jnp.arange(n)[None, :] == colour_cell[:, None]  # [O, N]
  dist0 = jnp.where(is_target, 0, UNREACHABLE).astype(jnp.int32)

  def body(carry):
    dist, _ = carry
    through = jnp.min(dist[:, nbr], axis=-1) + 1  # [O, N]
    new = jnp.where(free[None, :], jnp.minimum(dist, through), dist)
    return new, jnp.any(new != dist)

  dist, _ = jax.lax.while_loop(lambda c: c[1], body, (dist0, jnp.bool_(True)))
  return dist


def move_costs(state: gw.EnvState, dist: jax.Array, params: gw.EnvParams
               ) -> tuple[jax.Array, jax.Array]:
  """([4] distance to the target after each move, [4] move is safe).

  A move is safe if it neither ends the episode (entering a colour other than
  the target) nor cuts the agent off from the target; bumping into a wall or the
  edge is safe. Moves that do not change the cell cost UNREACHABLE so they are
  never optimal.
  """
  nbr = jnp.asarray(gw.neighbour_table(params.grid_size))
  pos = jnp.minimum(state.task_pos, state.task.shape[-1] - 1)
  target = state.task[pos]
  dest = nbr[state.agent]                                  # [4]
  cell = state.grid[dest]
  is_colour = (cell >= 0) & (cell < params.num_colours)
  stays = dest == state.agent
  cost = jnp.where(stays | (is_colour & (cell != target)), UNREACHABLE,
                   dist[target][dest])
  # Stepping out of a colour cell can lead into a pocket of free cells whose
  # only exit is that colour; such a move dooms the episode, so it is unsafe.
  safe = stays | (cost < UNREACHABLE)
  return cost, safe


def act(key: jax.Array, state: gw.EnvState, dist: jax.Array,
        epsilon: jax.Array | float, params: gw.EnvParams) -> jax.Array:
  """[] int32 expert action for one (unbatched) state."""
  k_noise, k_opt, k_rand = jax.random.split(key, 3)
  cost, safe = move_costs(state, dist, params)
  optimal = cost == jnp.min(cost)
  greedy = jax.random.categorical(k_opt, jnp.where(optimal, 0.0, -jnp.inf))
  random = jax.random.categorical(k_rand, jnp.where(safe, 0.0, -jnp.inf))
  explore = jax.random.uniform(k_noise) < epsilon
  return jnp.where(explore, random, greedy).astype(jnp.int32)


def optimal_actions(state: gw.EnvState, dist: jax.Array,
                    params: gw.EnvParams) -> jax.Array:
  """[4] bool, the moves an ε=0 expert may take (for the accuracy ceiling)."""
  cost, _ = move_costs(state, dist, params)
  return cost == jnp.min(cost)


@chex.dataclass(frozen=True)
class Rollout:
  """One batch of expert episodes, time-major inside the scan, batch-major out."""
  obs: jax.Array          # [B, S, obs_dim] o_t
  next_obs: jax.Array     # [B, S, obs_dim] o_{t+1}
  actions: jax.Array      # [B, S] int32 a_t
  valid: jax.Array        # [B, S] bool, step t happened (episode not done)
  subgoal: jax.Array      # [B, S] int32 subgoal id pursued at t (-1 invalid)
  subgoal_index: jax.Array  # [B, S] int32 position of that subgoal in the task
  task_pos: jax.Array     # [B, S] int32 colours done before step t
  optimal: jax.Array      # [B, S, 4] bool moves optimal for an ε=0 expert
  reward: jax.Array       # [B, S] float32
  task_id: jax.Array      # [B] int32
  epsilon: jax.Array      # [B] float32
  success: jax.Array      # [B] bool
  length: jax.Array       # [B] int32 steps taken before done (or S)
  visits: jax.Array       # [B, max_visits] int32 colours visited in order


def rollout(key: jax.Array, params: gw.EnvParams, epsilon: jax.Array,
            num_steps: int, task_id: jax.Array | None = None,
            obs_dtype=jnp.float32) -> Rollout:
  """One expert episode of `num_steps` steps (steps after `done` are masked)."""
  k_reset, k_act = jax.random.split(key)
  state, obs = gw.reset(k_reset, params, task_id)
  dist = distance_fields(state.grid, state.colour_cell, params)

  def body(carry, k):
    state, obs = carry
    action = act(k, state, dist, epsilon, params)
    record = dict(
        obs=obs.astype(obs_dtype), actions=action, valid=~state.done,
        subgoal=jnp.where(state.done, -1, gw.current_subgoal(state, params)),
        subgoal_index=state.task_pos // params.subgoal_size,
        task_pos=state.task_pos,
        optimal=optimal_actions(state, dist, params))
    state, obs, reward, _, _ = gw.step(state, action, params)
    record.update(next_obs=obs.astype(obs_dtype), reward=reward)
    return (state, obs), record

  (state, _), traj = jax.lax.scan(body, (state, obs),
                                  jax.random.split(k_act, num_steps))
  return Rollout(task_id=state.task_id, epsilon=jnp.float32(epsilon),
                 success=state.success, length=state.time, visits=state.visits,
                 **traj)
