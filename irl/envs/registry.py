"""Environments by name (mujoco_playground's registry idea).

Data, trainers and the pipeline reach an environment only through
`get(config.env.name)` (or `from_config(config)`): an `Environment` bundles
its pure reset/step, the sizes a model needs, its expert, its task tables,
its renderer and its default config section. A new environment (the ant of
docs/method.md §2.2, say) registers one more `Environment` here and every phase
runs on it.

An environment's functions work on one episode and are batched with
`jax.vmap` by the caller (`Environment.batched`):

  reset(key, params, task_id=None) -> (state, obs [obs_size])
  step(state, action, params) -> (state, obs, reward [], done [], info)

`state` must carry what the analyses read: `task_pos` (colours of the task
done so far), `visits` (colours visited, -1 padded), `success`, `time` and
`task_id`. Actions are integers for a discrete action space and float vectors
for a continuous one (`ActionSpec`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import ml_collections

from irl import acting
from irl.envs import arena_pinpad
from irl.envs import gridworld_expert
from irl.envs import gridworld_pinpad
from irl.envs import gridworld_render
from irl.envs import tasks as tasks_lib
from irl.utils.config_utils import Section


@dataclasses.dataclass(frozen=True)
class ActionSpec:
  """kind: 'discrete' (size actions) or 'continuous' (a size-vector in
  [-1, 1], Gaussian in the base model's head)."""
  kind: str
  size: int


@dataclasses.dataclass(frozen=True)
class Environment:
  """One registered environment: pure functions and data, no state.

  Attributes:
    name: the `config.env.name` that selects it.
    default_config: () -> the `env` config section with its defaults.
    section: the frozen `Section` dataclass that `irl.config.build` makes
      of that section (its fields are the environment's own).
    params_from_config: (env config section, tasks=None, **overrides) ->
      validated parameters; `tasks` replaces the pretraining task table.
      Raises ValueError naming the field.
    reset, step: the single-episode environment (module docstring).
    observation_size: params -> size of the flat observation.
    action_spec: params -> ActionSpec.
    expert_rollout: (key, params, epsilon, num_steps, task_id, obs_dtype) ->
      one expert episode (`irl.envs.gridworld_expert.Rollout` fields).
    render_observation: (obs [obs_size], params) -> (RGB image [H, W, 3]
      uint8 of what the observation shows, text labels [(x, y, text)] in
      image pixels).
    pretrain_tasks, post_task: the paper's task tables.
    encoder_fields: params -> model fields the observation encoders need
      (the gridworld's egocentric encoder needs `grid_size`).
    obs_likelihood: the next-observation loss's form (`irl.train.losses`):
      'bernoulli' over one-hot observations, 'gaussian' (MSE) over real ones.
  """
  name: str
  default_config: Callable[[], ml_collections.ConfigDict]
  section: type
  params_from_config: Callable[..., Any]
  reset: Callable
  step: Callable
  observation_size: Callable[[Any], int]
  action_spec: Callable[[Any], ActionSpec]
  expert_rollout: Callable
  render_observation: Callable
  pretrain_tasks: tuple[tuple[int, ...], ...]
  post_task: tuple[int, ...]
  encoder_fields: Callable[[Any], dict] = lambda params: {}
  obs_likelihood: str = 'bernoulli'

  def batched(self, params: Any):
    """The environment over a leading batch axis (`irl.acting.BatchedEnv`)."""
    return acting.batched(self.reset, self.step, params)


_REGISTRY: dict[str, Environment] = {}


def register(env: Environment) -> Environment:
  if env.name in _REGISTRY:
    raise ValueError(f'environment {env.name!r} is already registered')
  _REGISTRY[env.name] = env
  return env


def names() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def get(name: str) -> Environment:
  """The environment registered as `name`; a clear error otherwise."""
  if name not in _REGISTRY:
    raise ValueError(f'config.env.name={name!r} is invalid: must be one of '
                     f'{list(names())}')
  return _REGISTRY[name]


def from_config(config: ml_collections.ConfigDict) -> Environment:
  """The environment `config.env.name` selects."""
  return get(config.env.name)


# ---------------------------------------------------------------------------
# Gridworld-pinpad (docs/method.md §2.1).


@dataclasses.dataclass(frozen=True)
class PinpadSection(Section):
  """The `env` fields every pinpad environment has."""
  grid_size: int
  max_steps: int
  name: str
  num_colours: int
  num_walls: int
  post_task: str
  pretrain_tasks: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class GridworldSection(PinpadSection):
  """config.env of the gridworld (`_gridworld_config` has the defaults)."""
  max_visits: int = 16
  subgoal_size: int = 2


def _gridworld_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = 'gridworld_pinpad'
  c.grid_size = 7          # G
  c.num_colours = 8        # O
  c.num_walls = 4          # W
  c.max_steps = 100        # T
  c.subgoal_size = 2       # a subgoal is a pair of colours
  c.max_visits = 16        # visit log length (>= longest task)
  # Sequences are tuples: ml_collections overrides tuples on the command line
  # (--config.data.epsilons='(0.0, 0.1)'), not lists.
  c.pretrain_tasks = tuple(tasks_lib.format_task(t)
                           for t in tasks_lib.GRID_PRETRAIN_TASKS)
  c.post_task = tasks_lib.format_task(tasks_lib.GRID_POST_TASK)
  return c


GRIDWORLD = register(Environment(
    name='gridworld_pinpad',
    default_config=_gridworld_config,
    section=GridworldSection,
    params_from_config=gridworld_pinpad.params_from_config,
    reset=gridworld_pinpad.reset,
    step=gridworld_pinpad.step,
    observation_size=lambda params: params.obs_dim,
    action_spec=lambda params: ActionSpec('discrete',
                                          gridworld_pinpad.NUM_ACTIONS),
    expert_rollout=gridworld_expert.rollout,
    render_observation=gridworld_render.render_observation,
    pretrain_tasks=tuple(tasks_lib.GRID_PRETRAIN_TASKS),
    post_task=tuple(tasks_lib.GRID_POST_TASK),
    encoder_fields=lambda params: {'grid_size': params.grid_size},
))


# ---------------------------------------------------------------------------
# Ant-pinpad and its point body (docs/method.md §2.2).


@dataclasses.dataclass(frozen=True)
class ArenaSection(PinpadSection):
  """config.env of the arena (`_arena_config` has the defaults)."""
  cell_size: float
  expert_checkpoint: str = ''
  max_visits: int = 16
  point_dt: float = 0.25
  point_speed: float = 1.0
  subgoal_size: int = 1


def _arena_config(name: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = name
  c.grid_size = 4          # G
  c.cell_size = 2.0        # metres (unspecified in the paper)
  c.num_colours = 4        # O
  c.num_walls = 1          # W
  c.max_steps = 500        # T control steps
  c.subgoal_size = 1       # a subgoal is one colour
  c.max_visits = 16
  c.point_speed = 1.0      # the point body: m/s at |action| = 1
  c.point_dt = 0.25        # the point body: s per control step
  # The trained expert whose episodes are the data; '' is filled by every
  # entry point with <workdir>/checkpoints/expert.msgpack (irl.config.locate).
  c.expert_checkpoint = ''
  c.pretrain_tasks = tuple(tasks_lib.format_task(t)
                           for t in tasks_lib.ANT_PRETRAIN_TASKS)
  c.post_task = tasks_lib.format_task(tasks_lib.ANT_POST_TASK)
  return c


def _arena_expert_rollout(*args, **kwargs):
  # Imported here: Brax (the expert's networks) loads only for the arena.
  from irl.envs import arena_expert  # noqa: PLC0415
  return arena_expert.rollout(*args, **kwargs)


def _arena(name: str, body: str) -> Environment:
  return register(Environment(
      name=name,
      default_config=functools.partial(_arena_config, name),
      section=ArenaSection,
      params_from_config=functools.partial(arena_pinpad.params_from_config,
                                           body=body),
      reset=arena_pinpad.reset,
      step=arena_pinpad.step,
      observation_size=lambda params: params.obs_dim,
      action_spec=lambda params: ActionSpec('continuous', params.action_dim),
      expert_rollout=_arena_expert_rollout,
      render_observation=arena_pinpad.render_observation,
      pretrain_tasks=tuple(tasks_lib.ANT_PRETRAIN_TASKS),
      post_task=tuple(tasks_lib.ANT_POST_TASK),
      obs_likelihood='gaussian',
  ))


ANT = _arena('ant_pinpad', 'ant')
POINT = _arena('point_pinpad', 'point')
