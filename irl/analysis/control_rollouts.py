"""Ground-truth controllers in closed loop on the post-training task, and
where the failed episodes end.

The base model samples actions with its decoding cache while the controller
of the current pair is applied, switching to the next pair's controller when
the environment's `task_pos` crosses a multiple of `subgoal_size`. The base
model alone (no controller) runs on the same episodes for reference.

Choices where the paper is silent:
- Rollouts sample at temperature `control.temperature`; the base model alone
  and every controlled layer see the same layouts and sampling keys. Once the
  last pair is complete the episode is over (success), so the "stay on the
  last controller" rule never acts.
"""


from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irl import acting
from irl import config as config_lib
from irl.analysis.controllers import (controlled_forward, controller_factors,
                                      make_control_trainer)
from irl.config import Config
from irl.envs import registry
from irl.envs import tasks as tasks_lib
from irl.models import BaseModel, ControllerDecoder, init_cache
from irl.utils import parallel


def controller_index(task_pos: jax.Array, pairs: jax.Array,
                     subgoal_size: int) -> jax.Array:
  """The controller to apply: the pair whose colours are being visited.

  Args:
    task_pos: [...] int32 colours of the task done so far.
    pairs: [P] int32 subgoal id of each pair of the task.
    subgoal_size: colours per pair.

  Returns:
    [...] int32 subgoal id (the last pair's once the task is done).
  """
  pair = jnp.minimum(task_pos // subgoal_size, pairs.shape[0] - 1)
  return pairs[pair]


def seen_successors(pretrain_tasks: Sequence[Sequence[int]], size: int
                    ) -> dict[int, set[int]]:
  """Pair id -> the pair ids that follow it somewhere in pretraining."""
  out: dict[int, set[int]] = {}
  for task in pretrain_tasks:
    pairs = tasks_lib.subgoals(task, size)
    for a, b in zip(pairs, pairs[1:]):
      out.setdefault(a, set()).add(b)
  return out


def pair_pass_rates(histogram: Sequence[int]) -> list[float]:
  """P(pair k+1 completed | k pairs completed) for k = 0..P-1, from the
  histogram of completed pairs [P + 1] (nan where no episode got that far)."""
  h = np.asarray(histogram, np.float64)
  reached = h[::-1].cumsum()[::-1]          # episodes completing >= k pairs
  return [float(reached[k + 1] / reached[k]) if reached[k] else float('nan')
          for k in range(len(h) - 1)]


FAILURE_KINDS = ('start', 'within_pair', 'boundary_prior', 'boundary_other',
                 'timeout')


def failure_kinds(visits: np.ndarray, task: Sequence[int],
                  pretrain_tasks: Sequence[Sequence[int]], size: int
                  ) -> dict[str, int]:
  """Where and how the failed episodes of a post-task rollout ended.

  Args:
    visits: [E, V] visited colours (-1 padded) under the terminating rules,
      so a failed episode's last visit is the wrong colour.
    task: the post-training task's colours; pretrain_tasks: the pretraining
      table; size: colours per pair.

  Returns counts of failed episodes by kind: `start` (a wrong first colour),
  `within_pair` (a wrong colour between a pair's two), `boundary_prior` (right
  after a pair, the first colour of a pair that follows it in pretraining:
  the base model's prior won), `boundary_other` (another wrong colour after a
  pair), `timeout` (no wrong colour; T ran out).
  """
  follows = seen_successors(pretrain_tasks, size)
  counts = dict.fromkeys(FAILURE_KINDS, 0)
  for row in np.asarray(visits):
    pos = 0
    while pos < len(task) and pos < len(row) and row[pos] == task[pos]:
      pos += 1
    if pos >= len(task):
      continue                                   # success
    wrong = int(row[pos]) if pos < len(row) else -1
    if wrong < 0:
      kind = 'timeout'
    elif pos == 0:
      kind = 'start'
    elif pos % size:
      kind = 'within_pair'
    else:
      prior = {p * size for p in follows.get(task[pos - 1] // size, ())}
      kind = 'boundary_prior' if wrong in prior else 'boundary_other'
    counts[kind] += 1
  return counts


# ----------------------------------------------------------------------------
# Closed-loop evaluation.


def controlled_rollout(model: BaseModel, base_params: Any,
                       decoder: ControllerDecoder | None,
                       factors: tuple[jax.Array, ...] | None, layer: int,
                       env: registry.Environment, env_params: Any,
                       pairs: Sequence[int], key: jax.Array,
                       num_episodes: int, temperature: float = 1.0
                       ) -> dict[str, np.ndarray]:
  """Runs the (controlled) base model in the environment, with the cache.

  Before every step the controller of the current pair, `controller_index(
  task_pos)`, is applied at `layer`; `task_pos` is read from the
  environment's state (the colours of the task done so far). With
  `factors=None` the base model acts alone.

  Args:
    env: the environment; only its state's `task_pos` and `visits`, the
      reward and `done` are read, so a scripted environment can stand in
      for tests.

  Returns host arrays: success [E] bool, pairs_done [E] (completed pairs),
  visits [E, V] the colours visited (-1 padded; a failed episode's last is
  the wrong one), controller [E, T] the controller id applied at each step (-1 once the
  episode is done), task_pos [E, T] before each step, length [E].
  """
  num_steps = env_params.max_steps
  if model.config.backbone == 'transformer' and model.config.max_len < num_steps:
    raise ValueError(f'model.max_len={model.config.max_len} is shorter than '
                     f'the episode (env.max_steps={num_steps})')
  pairs = jnp.asarray(pairs, jnp.int32)
  run = _rollout_fn(model, decoder, layer, env, env_params, num_episodes,
                    float(temperature))
  return parallel.to_host(run(base_params, factors, pairs, key))


@functools.lru_cache(maxsize=32)
def _rollout_fn(model, decoder, layer, env, env_params, num_episodes,
                temperature):
  size = env_params.subgoal_size
  env = env.batched(env_params)

  @jax.jit
  def run(base_params, factors, pairs, key):
    def policy(cache, obs, env_state, k):
      # The oracle: the controller of the pair the environment says is next.
      ctrl = controller_index(env_state.task_pos, pairs, size)
      out = controlled_forward(model, base_params, decoder, factors, layer,
                               obs[:, None], ctrl[:, None], cache)
      action, _ = acting.sample_head(out, k, temperature)
      return action, out.cache, {'controller': ctrl,
                                 'task_pos': env_state.task_pos}

    state, _, _, trace = acting.episodes(
        env, policy, init_cache(model.config, num_episodes), num_episodes,
        key, env_params.max_steps)
    live = trace.live.T
    return {'success': (trace.reward > 0).any(0),
            'pairs_done': state.task_pos // size,
            'visits': state.visits,
            'length': live.sum(1),
            'controller': jnp.where(live, trace.extras['controller'].T, -1),
            'task_pos': trace.extras['task_pos'].T}

  return run


def evaluate_controllers(config: Config, base_params: Any,
                         layer: int, decoder_params: Any | None,
                         key: jax.Array) -> dict[str, Any]:
  """Post-task success with the controllers switched in order.

  `decoder_params=None` runs the base model alone: every controller is U = 0,
  the exact identity edit, so it shares the compiled rollout of `layer`.
  """
  cc = config.control
  trainer = make_control_trainer(config, layer)
  k = config_lib.num_subgoals(config)
  if decoder_params is None:
    shapes = jax.eval_shape(
        lambda: controller_factors(
            trainer.decoder, trainer.init(jax.random.key(0)).params, k))
    factors = tuple(jnp.zeros(x.shape, x.dtype) for x in shapes)
  else:
    factors = controller_factors(trainer.decoder, decoder_params, k)
  post = config_lib.env_params(config, post=True)
  roll = controlled_rollout(trainer.model, base_params, trainer.decoder,
                            factors, layer, registry.from_config(config),
                            post, config_lib.post_task_pairs(config),
                            key, cc.num_episodes, cc.temperature)
  num_pairs = len(config_lib.post_task_pairs(config))
  histogram = np.bincount(roll['pairs_done'], minlength=num_pairs + 1)
  return {
      'success': float(roll['success'].mean()),
      'mean_pairs_done': float(roll['pairs_done'].mean()),
      'pairs_done_histogram': histogram.tolist(),
      'pair_pass_rate': pair_pass_rates(histogram),
      'mean_length': float(roll['length'].mean()),
      'failures': failure_kinds(
          roll['visits'], tasks_lib.parse_task(config.env.post_task),
          config_lib.env_params(config).tasks,
          config.env.subgoal_size),
  }


