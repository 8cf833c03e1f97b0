"""Evaluation of a pretrained base model (issue: base models, item 5).

1. Held-out next-action prediction on fresh ε = 0 expert episodes (D*), beside
   the expert's own ceiling. The expert picks uniformly among its k optimal
   moves, so no predictor can beat accuracy E[1/k] or NLL E[ln k]; and the model
   cannot see the task, so at the start of an episode (and after each pair) it
   must guess which pair comes next, which costs more.
2. Closed-loop behaviour: actions are sampled from the model with the decoding
   cache in the environment. In free-running mode (a wrong colour does not end
   the episode, the episode ends after as many visits as a pretraining task
   has) we report the fraction of episodes whose visited colour sequence is a
   complete pretraining task; on the post-training task, the success rate
   (expected ≈ 0: it is what raw-action RL starts from).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from irl import acting
from irl import config as config_lib
from irl.config import Config
from irl.data import stream
from irl.envs import registry
from irl.models import BaseModel, init_cache
from irl.train import losses
from irl.utils import parallel


def action_prediction(model: BaseModel, params: Any, sample, key: jax.Array,
                      num_batches: int) -> dict[str, float]:
  """Next-action accuracy/NLL on expert batches, and the expert's ceiling
  (discrete actions); NLL and squared error of the mean (continuous)."""

  @jax.jit
  def batch_stats(key):
    batch = sample(key)
    out = model.apply(params, batch.obs)
    valid = batch.valid
    sums = {'action_nll': losses.action_nll(out, batch.actions)}
    if out.action_logits is None:
      # Continuous: no ceiling is known (the expert's own Gaussian is not
      # what D* holds: its mean action).
      sums['action_mse'] = ((out.action_mean - batch.actions) ** 2).mean(-1)
    else:
      pred = jnp.argmax(out.action_logits, -1)
      k = batch.optimal.sum(-1).astype(jnp.float32)
      picked_optimal = jnp.take_along_axis(batch.optimal, pred[..., None],
                                           -1)
      sums.update({
          'action_acc': (pred == batch.actions),
          'optimal_move_acc': picked_optimal[..., 0],
          'ceiling_action_acc': 1.0 / k,
          'ceiling_action_nll': jnp.log(k),
      })
    sums = {n: (v.astype(jnp.float32) * valid).sum() for n, v in sums.items()}
    sums['count'] = valid.sum().astype(jnp.float32)
    return sums

  totals = None
  for k in jax.random.split(key, num_batches):
    s = parallel.to_host(batch_stats(k))
    totals = s if totals is None else {n: totals[n] + s[n] for n in s}
  count = totals.pop('count')
  return {n: float(v / count) for n, v in totals.items()}


def closed_loop(model: BaseModel, params: Any, env: registry.Environment,
                env_params: Any, key: jax.Array, num_episodes: int,
                temperature: float = 1.0, trajectories: bool = False
                ) -> dict[str, np.ndarray]:
  """Samples actions from the model in the environment, with the cache.

  Returns host arrays: success [E], length [E], visits [E, max_visits],
  task_id [E]; with `trajectories`, also obs [E, T, obs_dim] (what the model
  read at each step) and live [E, T].
  """
  num_steps = env_params.max_steps
  if model.config.backbone == 'transformer' and model.config.max_len < num_steps:
    raise ValueError(f'model.max_len={model.config.max_len} is shorter than '
                     f'the episode (env.max_steps={num_steps})')

  batched = env.batched(env_params)
  policy = acting.model_policy(model, params, temperature)

  @jax.jit
  def run(key):
    state, _, _, trace = acting.episodes(
        batched, policy, init_cache(model.config, num_episodes), num_episodes,
        key, num_steps)
    out = {'success': state.success, 'length': state.time,
           'visits': state.visits, 'task_id': state.task_id}
    if trajectories:
      out.update(obs=trace.obs.swapaxes(0, 1), live=trace.live.T)
    return out

  return parallel.to_host(run(key))


def complete_task_fraction(visits: np.ndarray, task_table) -> float:
  """Fraction of rows of visits [E, V] whose first visits form a listed task."""
  table = {tuple(t) for t in task_table}
  length = len(next(iter(table)))
  return float(np.mean([tuple(v[:length]) in table for v in visits]))


def evaluate_base_model(config: Config, model: BaseModel,
                        params: Any, key: jax.Array) -> dict[str, Any]:
  """All evaluation numbers of a base model, as a flat dict."""
  ec = config.eval
  k_pred, k_free, k_post = jax.random.split(key, 3)
  expert_stream = stream.stream_from_config(
      config, 'expert', batch_size=ec.batch_size, jit=False)
  result = {f'heldout/{k}': v for k, v in action_prediction(
      model, params, expert_stream, k_pred, ec.num_batches).items()}

  pretrain_params = config_lib.env_params(config)
  lengths = {len(t) for t in pretrain_params.tasks}
  free = pretrain_params.replace(terminate_on_wrong_colour=False,
                                 max_visits=max(lengths))
  env = registry.from_config(config)
  roll = closed_loop(model, params, env, free, k_free, ec.num_episodes,
                     ec.temperature)
  result['closed_loop/complete_pretrain_task'] = complete_task_fraction(
      roll['visits'], pretrain_params.tasks)
  result['closed_loop/mean_visits'] = float((roll['visits'] >= 0).sum(-1).mean())
  # Under the terminating rules the episode succeeds iff its first visits are
  # exactly the task it was given (which the model cannot see).
  result['closed_loop/pretrain_success'] = float(np.mean([
      tuple(v[:len(pretrain_params.tasks[i])]) == pretrain_params.tasks[i]
      for v, i in zip(roll['visits'], roll['task_id'])]))

  post = config_lib.env_params(config, post=True)
  roll = closed_loop(model, params, env, post, k_post, ec.num_episodes,
                     ec.temperature)
  result['closed_loop/post_task_success'] = float(roll['success'].mean())
  return result

