"""Shortest-path expert for gridworld-pinpad (docs/method.md §3).

The expert heads for the next colour of its task along a shortest path in which
walls and every other colour cell are obstacles (entering another colour would
end the episode), choosing uniformly among optimal moves. With probability ε
the move is replaced by a uniformly random move that does not end the episode
and keeps the target reachable (never into a colour that is not the current
target, nor into a pocket of free cells sealed off by a colour; bumping into a
wall or the edge is allowed).

Colours never move, so the distance fields to all O colours are computed once
per episode (`distance_fields`) and each step is a gather.

`rollout` is the hot path of every data stream, so it is written for speed on
a CPU while giving exactly what `act` + `gw.step` give, draw for draw:
everything that does not depend on the agent's path (the random draws of every
step, the moves each task position allows from each cell) is computed before
the time loop in a few vectorised ops; the loop carries a handful of integers
and records one packed integer per step; observations are built after the loop
in one broadcast (the layout part is constant within an episode).
"""

from __future__ import annotations

import flax.struct
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
  # int16 inside the loop (UNREACHABLE + 1 fits): half the bytes to gather,
  # twice the SIMD lanes; ~1.4x faster on CPU.
  dist0 = jnp.where(is_target, 0, UNREACHABLE).astype(jnp.int16)

  def body(carry):
    dist, _ = carry
    through = jnp.min(dist[:, nbr], axis=-1) + 1  # [O, N]
    new = jnp.where(free[None, :], jnp.minimum(dist, through), dist)
    return new, jnp.any(new != dist)

  dist, _ = jax.lax.while_loop(lambda c: c[1], body, (dist0, jnp.bool_(True)))
  return dist.astype(jnp.int32)


def move_costs(state: gw.EnvState, dist: jax.Array, params: gw.EnvParams
               ) -> tuple[jax.Array, jax.Array]:
  """([4] distance to the target after each move, [4] move is safe).

  A move is safe if it neither ends the episode (entering a colour other than
  the target) nor cuts the agent off from the target; bumping into a wall or
  the edge is safe. Moves that do not change the cell cost UNREACHABLE so they
  are never optimal.
  """
  pos = jnp.minimum(state.task_pos, state.task.shape[-1] - 1)
  target = state.task[pos]
  return _costs(state.agent, target, state.grid, dist[target], params)


def _costs(cell: jax.Array, target: jax.Array, grid: jax.Array,
           dist_row: jax.Array, params: gw.EnvParams
           ) -> tuple[jax.Array, jax.Array]:
  """`move_costs` from `cell` (any leading shape) towards colour `target`."""
  nbr = jnp.asarray(gw.neighbour_table(params.grid_size))
  dest = nbr[cell]                                         # [..., 4]
  content = grid[dest]
  is_colour = (content >= 0) & (content < params.num_colours)
  stays = dest == cell[..., None]
  cost = jnp.where(stays | (is_colour & (content != target)), UNREACHABLE,
                   dist_row[dest])
  # Stepping out of a colour cell can lead into a pocket of free cells whose
  # only exit is that colour; such a move dooms the episode, so it is unsafe.
  safe = stays | (cost < UNREACHABLE)
  return cost, safe


def direction_field(grid: jax.Array, target: jax.Array, dist_row: jax.Array,
                    params: gw.EnvParams) -> jax.Array:
  """[N, 4] one-hot of a shortest-path move towards colour `target` from
  every cell (the first optimal one: UP, DOWN, LEFT, RIGHT), all zeros
  where the target cannot be reached; the arena expert's extra observation
  (docs/method.md §3)."""
  cost, _ = _costs(jnp.arange(params.num_cells), target, grid, dist_row,
                   params)
  best = jnp.argmin(cost, -1)
  reachable = jnp.min(cost, -1) < UNREACHABLE
  return jax.nn.one_hot(best, 4) * reachable[:, None]


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


@flax.struct.dataclass
class Rollout:
  """One batch of expert episodes, time-major inside the scan, batch-major out."""
  obs: jax.Array          # [B, S, obs_dim] o_t
  next_obs: jax.Array     # [B, S, obs_dim] o_{t+1}
  actions: jax.Array      # [B, S] int32 a_t, or [B, S, A] float32 (the arena)
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


def _step_draws(key: jax.Array, epsilon: jax.Array) -> tuple[jax.Array,
                                                             jax.Array]:
  """The random part of `act` for one step key, without the state.

  Returns ([] explore, [16] uint32 2-bit action per 4-bit move mask): `act`
  takes argmax(gumbel + logits) over the allowed moves, which is the first
  maximum of the gumbels where the mask allows, so the action for each of the
  16 masks can be tabulated before the state is known.
  """
  k_noise, k_opt, k_rand = jax.random.split(key, 3)
  explore = jax.random.uniform(k_noise) < epsilon
  gumbel = jnp.where(explore, jax.random.gumbel(k_rand, (4,), jnp.float32),
                     jax.random.gumbel(k_opt, (4,), jnp.float32))
  masks = jnp.arange(16, dtype=jnp.uint32)
  allowed = (masks[:, None] >> jnp.arange(4, dtype=jnp.uint32)) & 1  # [16, 4]
  choice = jnp.argmax(jnp.where(allowed == 1, gumbel, -jnp.inf), axis=-1)
  packed = jnp.sum(choice.astype(jnp.uint32) << (2 * masks), dtype=jnp.uint32)
  return explore, packed


# Bit layout of the policy table: bits 0-3 the optimal moves, 4-7 the safe
# moves, 8 and up the target colour + 1. And of the per-step flags: bit 0
# done, 1-2 the action, 3-6 the optimal moves, 7 success.
_SAFE_SHIFT = 4
_TARGET_SHIFT = 8


def rollout(key: jax.Array, params: gw.EnvParams, epsilon: jax.Array,
            num_steps: int, task_id: jax.Array | None = None,
            obs_dtype=jnp.float32) -> Rollout:
  """One expert episode of `num_steps` steps (steps after `done` are masked)."""
  n, o = params.num_cells, params.num_colours
  k_reset, k_act = jax.random.split(key)
  state, _ = gw.reset(k_reset, params, task_id)
  grid, task = state.grid, state.task
  dist = distance_fields(grid, state.colour_cell, params)
  task_len = task.shape[-1]

  # Per episode, for every task position p and cell c: the optimal and safe
  # moves (as `move_costs`) and the target colour, packed in one int32.
  cells = jnp.arange(n, dtype=jnp.int32)
  cost, safe = jax.vmap(
      lambda target: _costs(cells, target, grid, dist[target], params))(task)
  optimal = cost == jnp.min(cost, axis=-1, keepdims=True)   # [L, N, 4]
  bit = 1 << jnp.arange(4, dtype=jnp.int32)
  policy = (jnp.sum(jnp.where(optimal, bit, 0), -1)
            | (jnp.sum(jnp.where(safe, bit, 0), -1) << _SAFE_SHIFT)
            | ((task[:, None] + 1) << _TARGET_SHIFT)).reshape(-1)  # [L·N]

  # Where each move leads (walls block) and the colour of every cell.
  nbr = jnp.asarray(gw.neighbour_table(params.grid_size))
  move_to = jnp.where(grid[nbr] >= o, cells[:, None], nbr).reshape(-1)
  colour_at = jnp.where((grid >= 0) & (grid < o), grid, -1)

  explore, packed = jax.vmap(_step_draws, in_axes=(0, None))(
      jax.random.split(k_act, num_steps), epsilon)
  mask_shift = jnp.where(explore, _SAFE_SHIFT, 0).astype(jnp.int32)

  def body(carry, xs):
    # Exactly `act` then `gw.step` (see their code), on integers.
    agent, task_pos, done, time, num_visits = carry
    shift, table = xs
    pos = jnp.minimum(task_pos, task_len - 1)
    code = policy[pos * n + agent]
    mask = (code >> shift) & 15
    action = ((table >> (2 * mask).astype(jnp.uint32)) & 3).astype(jnp.int32)
    new_agent = move_to[agent * 4 + action]
    moved = (new_agent != agent) & ~done
    colour = colour_at[new_agent]
    is_visit = moved & (colour >= 0)
    correct = is_visit & (colour == (code >> _TARGET_SHIFT) - 1)
    new_pos = task_pos + correct.astype(jnp.int32)
    success = correct & (new_pos >= state.task_len)
    logged = is_visit & (num_visits < params.max_visits)
    new_visits = num_visits + logged.astype(jnp.int32)
    new_time = time + (~done).astype(jnp.int32)
    if params.terminate_on_wrong_colour:
      failure = is_visit & ~correct
    else:
      failure = is_visit & (new_visits >= params.max_visits) & ~success
    timeout = (new_time >= params.max_steps) & ~done & ~success & ~failure
    new_done = done | success | failure | timeout
    flags = (done.astype(jnp.int32) | (action << 1) | ((code & 15) << 3)
             | (success.astype(jnp.int32) << 7))
    carry = (jnp.where(done, agent, new_agent), new_pos, new_done, new_time,
             new_visits)
    return carry, (agent, task_pos, flags)

  init = (state.agent, state.task_pos, state.done, state.time,
          state.num_visits)
  final, (agent, task_pos, flags) = jax.lax.scan(body, init,
                                                 (mask_shift, packed))
  last_agent, _, _, length, _ = final

  # Unpack the records; everything below is vectorised over time.
  done = (flags & 1) == 1
  actions = (flags >> 1) & 3
  optimal = ((flags[:, None] >> (3 + jnp.arange(4))) & 1) == 1
  success = ((flags >> 7) & 1) == 1
  finished = task_pos >= state.task_len
  target = task[jnp.minimum(task_pos, task_len - 1)]
  subgoal = jnp.where(done | finished, -1, target // params.subgoal_size)

  # Visit log: the colours entered, in order, the first max_visits of them.
  after = jnp.concatenate([agent[1:], last_agent[None]])
  entered = colour_at[after]
  visit = (after != agent) & (entered >= 0)  # the agent only moves when live
  rank = jnp.cumsum(visit) - 1
  slots = jnp.arange(params.max_visits)[:, None]
  visits = jnp.sum(jnp.where(visit & (rank == slots), entered + 1, 0),
                   axis=1) - 1

  return Rollout(
      obs=gw.observe(grid, agent, params, obs_dtype),
      next_obs=gw.observe(grid, after, params, obs_dtype),
      actions=actions, valid=~done, subgoal=subgoal,
      subgoal_index=task_pos // params.subgoal_size, task_pos=task_pos,
      optimal=optimal, reward=success.astype(jnp.float32),
      task_id=state.task_id, epsilon=jnp.float32(epsilon),
      success=jnp.any(success), length=length, visits=visits.astype(jnp.int32))
