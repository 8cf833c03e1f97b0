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

The trained policy (`save_policy` / `load_policy`: Brax's observation
normaliser and policy network in one msgpack file) makes the data: `rollout`
is the arena's `expert_rollout` (irl/envs/registry.py), one episode of the
base model's observations and the expert's actions. ε there is the chance
that a step samples the expert's Gaussian (tanh-squashed, as Brax's PPO
acts) instead of taking its mean: D uses ε = 1, D* ε = 0 (docs/method.md §3).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from brax.envs import base as brax_base
from brax.training.acme import running_statistics
from brax.training.agents.ppo import networks as ppo_networks

from irl.envs import arena_pinpad as ap
from irl.envs import gridworld_expert
from irl.utils import config_utils
from irl.utils.checkpoint import MissingInputError

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


# ---------------------------------------------------------------------------
# The trained policy and its episodes.


def make_policy(env: ExpertEnv, policy: Any, normalize: bool = True
                ) -> Callable[[jax.Array, jax.Array | None], jax.Array]:
  """(expert observation [D], key) -> action [A] in [-1, 1]; `policy` =
  (normaliser state, policy network params) as Brax's PPO returns them;
  the mean action (tanh of the Gaussian's mean) when key is None.
  normalize: it was trained with `expert.normalize_observations`."""
  networks = ppo_networks.make_ppo_networks(
      env.observation_size, env.action_size,
      preprocess_observations_fn=(running_statistics.normalize if normalize
                                  else lambda x, _: x))
  make = ppo_networks.make_inference_fn(networks)
  stochastic, deterministic = make(policy, False), make(policy, True)

  def act(obs: jax.Array, key: jax.Array | None) -> jax.Array:
    if key is None:
      return deterministic(obs, jax.random.key(0))[0]
    return stochastic(obs, key)[0]
  return act


def save_policy(path: str, policy: Any, normalize: bool) -> None:
  """Writes (normaliser state, policy params) and the normalise flag."""
  normaliser, network = policy
  data = {'normalize': np.bool_(normalize),
          'normaliser': flax.serialization.to_state_dict(normaliser),
          'network': flax.serialization.to_state_dict(network)}
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  config_utils.atomic_write_text(
      path, flax.serialization.msgpack_serialize(data))


def load_policy(path: str) -> tuple[Any, bool]:
  """((normaliser state, policy params), normalize) saved by `save_policy`."""
  if not path:
    raise MissingInputError(
        'config.env.expert_checkpoint is empty: the arena\'s data comes from '
        'its trained expert. The entry points fill it with '
        '<workdir>/checkpoints/expert.msgpack, which '
        '`python experiments/train_expert.py --config=configs/ant.py:<preset> '
        '--workdir=<workdir>` writes.')
  if not os.path.exists(path):
    raise MissingInputError(
        f'no trained expert at {path} (config.env.expert_checkpoint); run '
        '`python experiments/train_expert.py --config=configs/ant.py:<preset> '
        '--workdir=<workdir>` first.')
  return _load_policy(path, os.path.getmtime(path))


@functools.lru_cache(maxsize=4)
def _load_policy(path: str, mtime: float) -> tuple[Any, bool]:
  del mtime  # part of the cache key: a retrained expert is read again
  with open(path, 'rb') as f:
    raw = flax.serialization.msgpack_restore(f.read())
  if set(raw) != {'normalize', 'normaliser', 'network'}:
    raise MissingInputError(
        f'{path} is not an expert policy of this version (keys '
        f'{sorted(raw)}); retrain it with experiments/train_expert.py.')
  normaliser = running_statistics.RunningStatisticsState(**raw['normaliser'])
  return (normaliser, raw['network']), bool(raw['normalize'])


def rollout(key: jax.Array, params: ap.ArenaParams,
            epsilon: jax.Array | float, num_steps: int,
            task_id: jax.Array | int | None = None,
            obs_dtype: Any = jnp.float32) -> gridworld_expert.Rollout:
  """One episode of the trained expert (`params.expert`) for `num_steps`
  steps; the Rollout fields of the gridworld's expert, with actions
  [S, action_dim] float32 and `optimal` the grid-level shortest-path move
  at the body's cell (the expert's extra observation)."""
  policy, normalize = load_policy(params.expert)
  env = ExpertEnv(params)
  act = make_policy(env, policy, normalize)
  k_reset, k_steps = jax.random.split(key)
  state, xobs = env._start(k_reset, jnp.int32(0), task_id)
  obs = xobs[:params.obs_dim]      # the arena's own part of the expert's view

  def body(carry, k):
    s, xobs, obs = carry
    k_explore, k_act = jax.random.split(k)
    sample = jax.random.uniform(k_explore) < epsilon
    action = jnp.where(sample, act(xobs, k_act), act(xobs, None))
    arena = s.arena
    optimal = _field(s, params)[ap.nearest_cell(arena.xy, params)] > 0
    record = (obs, action, ~arena.done, ap.current_subgoal(arena, params),
              arena.task_pos, optimal)
    arena, next_obs, reward, _, _ = ap.step(arena, action, params)
    new = ExpertState(arena, s.dist)
    return (new, env.observe(new, next_obs), next_obs), record + (next_obs,
                                                                  reward)

  (end, _, _), (obs, actions, valid, subgoal, task_pos, optimal, next_obs,
                reward) = jax.lax.scan(body, (state, xobs, obs),
                                       jax.random.split(k_steps, num_steps))
  arena = end.arena
  return gridworld_expert.Rollout(
      obs=obs.astype(obs_dtype), next_obs=next_obs.astype(obs_dtype),
      actions=actions.astype(jnp.float32), valid=valid,
      subgoal=jnp.where(valid, subgoal, -1),
      subgoal_index=task_pos // params.subgoal_size, task_pos=task_pos,
      optimal=optimal, reward=reward, task_id=arena.task_id,
      epsilon=jnp.float32(epsilon), success=arena.success,
      length=jnp.sum(valid).astype(jnp.int32), visits=arena.visits)
