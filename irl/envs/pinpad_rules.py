"""The pinpad rules every body shares (docs/method.md §2): visiting a colour,
advancing the task, failing, succeeding, timing out.

A body (the gridworld's agent, the ant, the point) says only which colour,
if any, it entered this step and whether it crashed; `visit_rules` does the
rest, so the gridworld and the arena follow the same rules by construction.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp

from irl.envs import tasks as tasks_lib


def static(default: Any) -> Any:
  """A static (non-pytree) dataclass field with its default."""
  return flax.struct.field(pytree_node=False, default=default)


@flax.struct.dataclass
class PinpadParams:
  """What every pinpad body shares: the layout's sizes, the tasks and the
  rules' limits (a pytree without leaves, so it can be passed straight to
  `jax.jit` and `jax.vmap`; its fields are part of the compilation key).
  Defaults are the gridworld's; a body's params subclass this.

  Attributes:
    grid_size: G, the arena is G×G cells.
    num_colours: O coloured cells, colour ids 0..O-1.
    num_walls: W wall cells.
    max_steps: T, the episode times out after T steps.
    tasks: the task table; `reset` samples a task id uniformly unless given.
    subgoal_size: colours per subgoal (2 in the gridworld: pairs 0-1, 2-3).
    terminate_on_wrong_colour: if False, a wrong colour is recorded as a
      visit but does not end the episode (free-running evaluation).
    max_visits: length of the visit log in the state; when
      `terminate_on_wrong_colour` is False the episode also ends once the
      log is full.
  """
  grid_size: int = static(7)
  num_colours: int = static(8)
  num_walls: int = static(4)
  max_steps: int = static(100)
  tasks: tuple[tuple[int, ...], ...] = static(tasks_lib.GRID_PRETRAIN_TASKS)
  subgoal_size: int = static(2)
  terminate_on_wrong_colour: bool = static(True)
  max_visits: int = static(16)

  @property
  def num_cells(self) -> int:
    return self.grid_size * self.grid_size

  @property
  def max_task_len(self) -> int:
    return max(len(t) for t in self.tasks)

  @property
  def num_tasks(self) -> int:
    return len(self.tasks)

  def replace_tasks(self, tasks: Sequence[Sequence[int]]) -> Any:
    return self.replace(tasks=tuple(tasks_lib.parse_task(t) for t in tasks))

  def validate(self) -> Any:
    """Raises ValueError naming the offending field; returns self."""
    def fail(field, value, allowed):
      raise ValueError(f'env.{field}={value!r} is invalid: {allowed}')
    if self.grid_size < 2:
      fail('grid_size', self.grid_size, 'must be >= 2')
    if self.num_colours < 1:
      fail('num_colours', self.num_colours, 'must be >= 1')
    if self.num_walls < 0:
      fail('num_walls', self.num_walls, 'must be >= 0')
    needed = self.num_colours + self.num_walls + 1
    if self.num_cells < needed:
      fail('grid_size', self.grid_size,
           f'G*G={self.num_cells} cells cannot hold num_colours + num_walls + '
           f'1 agent = {needed} distinct cells')
    if self.max_steps <= 0:
      fail('max_steps', self.max_steps, 'must be > 0')
    if self.subgoal_size < 1:
      fail('subgoal_size', self.subgoal_size, 'must be >= 1')
    if not self.tasks:
      fail('tasks', self.tasks, 'must contain at least one task')
    for i, task in enumerate(self.tasks):
      if not task:
        fail(f'tasks[{i}]', task, 'a task needs at least one colour')
      bad = [c for c in task if not 0 <= c < self.num_colours]
      if bad:
        fail(f'tasks[{i}]', tasks_lib.format_task(task),
             f'colours must be in [0, {self.num_colours - 1}] '
             f'(num_colours={self.num_colours}); got {bad}')
      if any(a == b for a, b in zip(task[:-1], task[1:])):
        fail(f'tasks[{i}]', tasks_lib.format_task(task),
             'a colour cannot follow itself (it cannot be re-entered without '
             'leaving)')
    if self.max_visits < self.max_task_len:
      fail('max_visits', self.max_visits,
           f'must be >= the longest task ({self.max_task_len})')
    return self



_SHARED_INTS = ('grid_size', 'num_colours', 'num_walls', 'max_steps',
                'subgoal_size', 'max_visits')


def params_from_config(cls: type, env_config: Any,
                       tasks: Sequence[Sequence[int]] | None = None,
                       **fields: Any) -> Any:
  """`cls` (a `PinpadParams`) from an `env` config section, validated.

  The shared fields the section holds are read from it (the others keep
  `cls`'s defaults), the task table is `tasks` or the section's
  `pretrain_tasks`, and `fields` sets the body's own; `max_visits` grows to
  the longest task.
  """
  table = tasks if tasks is not None else env_config.pretrain_tasks
  shared = {name: int(env_config[name]) for name in _SHARED_INTS
            if name in env_config}
  params = cls(tasks=tuple(tasks_lib.parse_task(t) for t in table),
               **shared, **fields)
  params = params.replace(max_visits=max(params.max_visits,
                                         params.max_task_len))
  return params.validate()

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
