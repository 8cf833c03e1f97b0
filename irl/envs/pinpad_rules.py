"""The pinpad rules every body shares (docs/method.md §2): visiting a colour,
advancing the task, failing, succeeding, timing out.

A body (the gridworld's agent, the ant, the point) says only which colour,
if any, it entered this step and whether it crashed; `visit_rules` does the
rest, so the gridworld and the arena follow the same rules by construction.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def visit_rules(state: Any, is_visit: jax.Array, colour: jax.Array, *,
                max_visits: int, max_steps: int,
                terminate_on_wrong_colour: bool = True,
                crash: jax.Array | bool = False
                ) -> tuple[dict[str, jax.Array], jax.Array, jax.Array, dict]:
  """One step of the rules.

  Args:
    state: has `task` [max_task_len] (−1 padded), `task_len`, `task_pos`,
      `visits` [max_visits], `num_visits`, `time`, `done`, `success`.
    is_visit: [] bool, a colour cell was entered from another cell.
    colour: [] int32, that colour (−1 when no visit).
    crash: [] bool, the body failed on its own (the ant's wall or height).

  Returns:
    (changes of those state fields, reward [], done [], info). A finished
    episode stays finished: nothing advances, reward 0.
  """
  is_visit = is_visit & ~state.done
  colour = jnp.where(is_visit, colour, -1)
  expected = jnp.take(state.task, jnp.minimum(state.task_pos,
                                              state.task.shape[-1] - 1))
  correct = is_visit & (colour == expected)
  wrong = is_visit & ~correct
  task_pos = state.task_pos + correct.astype(jnp.int32)
  success = correct & (task_pos >= state.task_len)

  slot = jnp.minimum(state.num_visits, max_visits - 1)
  logged = is_visit & (state.num_visits < max_visits)
  # An elementwise select, not a scatter (scatters are slow under vmap on CPU).
  visits = jnp.where((jnp.arange(max_visits) == slot) & logged, colour,
                     state.visits)
  num_visits = state.num_visits + logged.astype(jnp.int32)

  time = state.time + (~state.done).astype(jnp.int32)
  if terminate_on_wrong_colour:
    failure = wrong
  else:
    failure = is_visit & (num_visits >= max_visits) & ~success
  failure = failure | (jnp.asarray(crash) & ~state.done & ~success)
  timeout = (time >= max_steps) & ~state.done & ~success & ~failure
  done = state.done | success | failure | timeout
  changes = {'task_pos': task_pos, 'time': time, 'visits': visits,
             'num_visits': num_visits, 'done': done,
             'success': state.success | success}
  info = {'task_pos': task_pos, 'visited_colour': colour,
          'is_visit': is_visit, 'wrong_colour': wrong, 'success': success,
          'failure': failure, 'timeout': timeout, 'visits': visits,
          'num_visits': num_visits}
  return changes, success.astype(jnp.float32), done, info
