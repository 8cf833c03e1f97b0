"""The arena's expert: Brax's PPO on `arena_expert.ExpertEnv`
(docs/method.md §3), its success rates, and its policy for the data.

`train` runs `brax.training.agents.ppo.train` (not a PPO of our own) with
`config.expert`'s settings on all pretraining tasks and saves the policy
(observation normaliser and network parameters) to
`<workdir>/checkpoints/expert.msgpack`, with the deterministic policy's
success rates on the pretraining tasks and on the post-training task and
the training curve in `<workdir>/expert/summary.json`. A rerun with the same
`env` and `expert` sections loads it; one with other settings (or a file of
an older `POLICY_FORMAT`) is refused, never retrained over it. The data of
every later phase comes from that file (`irl.envs.arena_expert.rollout`,
config.env.expert_checkpoint).
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging
import numpy as np
from brax.envs.wrappers import training as brax_wrappers
from brax.training.agents.ppo import train as ppo

from irl import config as config_lib
from irl.config import Config
from irl.envs import arena_expert
from irl.envs import arena_pinpad as ap
from irl.envs import tasks as tasks_lib
from irl.utils import checkpoint as ckpt_lib
from irl.utils import config_utils
from irl.utils import parallel

# Bumped when the saved policy's layout changes: an older file is refused.
POLICY_FORMAT = 2
# The `expert` fields that are Brax PPO's own arguments.
PPO_FIELDS = ('num_timesteps', 'num_envs', 'batch_size', 'num_minibatches',
              'unroll_length', 'num_updates_per_batch', 'learning_rate',
              'entropy_cost', 'discounting', 'reward_scaling',
              'normalize_observations')


def _brax_compat() -> None:
  """Brax 0.14.2's PPO still calls `jax.device_put_replicated`, which the
  pinned jax removed; give it the same thing (a leading device axis, one
  copy per device) so the well-kept trainer runs unchanged."""
  if 'device_put_replicated' in vars(jax):
    return

  def device_put_replicated(x, devices):
    mesh = jax.sharding.Mesh(np.array(devices), ('d',))
    spread = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('d'))
    return jax.tree.map(lambda a: jax.device_put(
        jnp.stack([a] * len(devices)), spread), x)
  jax.device_put_replicated = device_put_replicated


class _Truncation(brax_wrappers.Wrapper):
  """A timeout at T is a truncation (PPO bootstraps the value there), not a
  termination; the episode wrapper below never truncates on its own."""

  def step(self, state, action):
    state = self.env.step(state, action)
    state.info['truncation'] = state.metrics['timeout']
    return state


def _wrap(env, episode_length: int, action_repeat: int, **unused):
  # No Brax auto-reset: ExpertEnv starts a fresh layout itself. The episode
  # wrapper only keeps the bookkeeping PPO reads (metrics, episode ends).
  del episode_length, unused
  return _Truncation(brax_wrappers.EpisodeWrapper(
      brax_wrappers.VmapWrapper(env), 2 ** 30, action_repeat))


def success_rate(env: arena_expert.ExpertEnv, policy: Any, key: jax.Array,
                 num_episodes: int, tasks: tuple | None = None,
                 normalize: bool = True) -> float:
  """Fraction of `num_episodes` deterministic-policy episodes that succeed
  (on `tasks` instead of the pretraining table when given)."""
  params = env.params if tasks is None else env.params.replace(tasks=tasks)
  env = arena_expert.ExpertEnv(params)
  act = arena_expert.make_policy(env, policy, normalize)

  def episode(k):
    start = env.reset(k)

    def body(s, _):
      arena = s.pipeline_state.arena
      a = act(s.obs, None)
      new, obs, _, _, _ = ap.step(arena, a, params)
      inner = s.pipeline_state.replace(arena=new)
      return s.replace(pipeline_state=inner, obs=env.observe(inner, obs)), None
    end, _ = jax.lax.scan(body, start, None, length=params.max_steps)
    return end.pipeline_state.arena.success
  keys = jax.random.split(key, num_episodes)
  return float(jnp.mean(jax.jit(jax.vmap(episode))(keys)))


def train(config: Config, workdir: str) -> dict:
  """Trains (or, when done with the same config, loads) the expert of
  `config.env` with `config.expert`'s PPO; returns its summary. An expert
  in `workdir` trained under other settings is refused
  (`irl.config.check_expert_fingerprint`)."""
  config = config_lib.build(config)
  e = config.expert
  params = config_lib.env_params(config)
  path = config_lib.expert_path(workdir)
  summary_path = config_lib.expert_summary_path(workdir)
  # The post-training task is only evaluated (post_task_success), never
  # trained on: another one reuses the expert.
  fingerprint = {**config_lib.expert_fingerprint(config),
                 'policy_format': POLICY_FORMAT}
  if os.path.exists(summary_path):
    summary = config_utils.read_json(summary_path)
    config_lib.check_expert_fingerprint(summary.get('fingerprint', {}),
                                        fingerprint, workdir)
    if os.path.exists(path):
      return {**summary, 'success_post': post_task_success(config, workdir)}
  elif os.path.exists(path):
    # The summary is written right after the policy: a policy without one
    # is from a run stopped between the two writes, or from elsewhere.
    raise ckpt_lib.CheckpointMismatchError(
        f'{path} has no summary ({summary_path}), so the config it was '
        'trained with is unknown. Use a fresh --workdir, or delete the file '
        'to train the expert again (every phase in this workdir learned '
        'from its data).')
  env = arena_expert.ExpertEnv(params, e.progress_weight)
  _brax_compat()
  t0 = time.time()
  curve = []

  def progress(step: int, metrics: dict) -> None:
    curve.append({'step': int(step), **{k: float(v) for k, v in
                                        metrics.items()}})
    logging.info('expert: %d env steps (%.0f s) %s', step, time.time() - t0,
                 {k: round(float(v), 3) for k, v in metrics.items()
                  if 'reward' in k or 'success' in k})

  _, policy_params, _ = ppo.train(
      environment=env, episode_length=params.max_steps, wrap_env_fn=_wrap,
      seed=e.seed, num_evals=0, run_evals=False, progress_fn=progress,
      log_training_metrics=True, **{k: e[k] for k in PPO_FIELDS})
  policy = (policy_params[0], policy_params[1])
  key = jax.random.key(e.seed + 1)
  post = (tasks_lib.parse_task(config.env.post_task),)
  summary = {
      'fingerprint': fingerprint, 'train_seconds': time.time() - t0,
      'success_pretrain': success_rate(env, policy, key, e.eval_episodes,
                                       normalize=e.normalize_observations),
      'success_post': success_rate(env, policy, key, e.eval_episodes,
                                   tasks=post,
                                   normalize=e.normalize_observations),
      'curve': curve}
  summary['success_by_post_task'] = {config.env.post_task:
                                     summary['success_post']}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  os.makedirs(os.path.dirname(summary_path), exist_ok=True)
  if parallel.is_writer():
    arena_expert.save_policy(path, policy, e.normalize_observations)
  config_utils.write_json(summary_path, summary, indent=1)
  return summary


def post_task_success(config: Config, workdir: str) -> float | None:
  """The workdir's expert's deterministic success on `config.env.post_task`
  (measured once per task and kept in its summary), or None when no expert
  was trained there. The arena's Fig. 8 is read against it."""
  config = config_lib.build(config)
  path = config_lib.expert_path(workdir)
  summary_path = config_lib.expert_summary_path(workdir)
  if not (os.path.exists(path) and os.path.exists(summary_path)):
    return None
  summary = config_utils.read_json(summary_path)
  rates = summary.setdefault('success_by_post_task', {})
  task = config.env.post_task
  if task not in rates:
    policy, normalize = arena_expert.load_policy(path)
    env = arena_expert.ExpertEnv(config_lib.env_params(config))
    rates[task] = success_rate(
        env, policy, jax.random.key(config.expert.seed + 1),
        config.expert.eval_episodes,
        tasks=(tasks_lib.parse_task(task),), normalize=normalize)
    config_utils.write_json(summary_path, summary, indent=1)
  return rates[task]
