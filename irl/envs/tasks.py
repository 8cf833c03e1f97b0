"""Task tables of the paper (docs/method.md §2): the one place they are written down.

A task is a sequence of colour ids that must be visited in order. In the
gridworld a subgoal is a pair of colours (0-1, 2-3, 4-5, 6-7); in the ant
environment a subgoal is one colour.
"""

from typing import Sequence

Task = tuple[int, ...]


def _parse(spec: str) -> Task:
  return tuple(int(c) for c in spec.split('-'))


GRID_PRETRAIN_TASKS: tuple[Task, ...] = tuple(_parse(s) for s in (
    '0-1-4-5-0-1', '0-1-4-5-2-3', '0-1-6-7-2-3', '2-3-0-1-4-5',
    '2-3-6-7-2-3', '2-3-6-7-4-5', '4-5-0-1-4-5', '4-5-0-1-6-7',
    '4-5-2-3-6-7', '6-7-2-3-0-1', '6-7-2-3-6-7', '6-7-4-5-0-1',
    '0-1-6-7-4-5', '2-3-0-1-6-7', '4-5-2-3-0-1', '6-7-4-5-2-3',
))
# Pair transitions 01->23, 23->45, 45->67, 67->01 never occur in pretraining,
# and it is twice as long as a pretraining task.
GRID_POST_TASK: Task = _parse('0-1-2-3-4-5-6-7-0-1-2-3')

ANT_PRETRAIN_TASKS: tuple[Task, ...] = tuple(_parse(s) for s in (
    '0-3-2', '1-0-3', '2-1-0', '3-2-1', '0-2-0', '0-2-1', '0-3-1', '1-0-2',
    '1-3-1', '1-3-2', '2-0-2', '2-0-3', '2-1-3', '3-1-0', '3-1-3', '3-2-0',
))
ANT_POST_TASK: Task = _parse('0-1-2-3')


def parse_task(spec: str | Task) -> Task:
  """'0-1-2-3' or (0, 1, 2, 3) -> (0, 1, 2, 3)."""
  if isinstance(spec, str):
    return _parse(spec)
  return tuple(int(c) for c in spec)


def format_task(task: Task) -> str:
  return '-'.join(str(c) for c in task)


def subgoals(task: Sequence[int], subgoal_size: int) -> list[int]:
  """The task's subgoal ids in order (subgoal = colour // size):
  0-1-2-3-4-5-6-7-0-1-2-3 with pairs -> [0, 1, 2, 3, 0, 1]."""
  return [task[i] // subgoal_size for i in range(0, len(task), subgoal_size)]


def subgoal_transitions(task: Task, subgoal_size: int) -> set[tuple[int, int]]:
  """Consecutive (subgoal, next subgoal) pairs of a task."""
  goals = subgoals(task, subgoal_size)
  return set(zip(goals[:-1], goals[1:]))
