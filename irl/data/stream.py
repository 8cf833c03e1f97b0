"""Fresh batches of expert episodes, generated under jit (PAPER.md §3).

Data is never stored: `make_expert_stream(...)` returns a pure
`sample(key) -> Rollout` that rolls out a batch of expert episodes. It is cheap
enough to call inside every training step (see benchmarks/env_throughput.py),
and it can be called inside another jitted function.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from irl.data import gridworld_expert as expert
from irl.envs import gridworld_pinpad as gw

Rollout = expert.Rollout


def make_expert_stream(params: gw.EnvParams, batch_size: int, seq_len: int,
                       epsilons: Sequence[float] = (0.0,),
                       task_ids: Sequence[int] | None = None,
                       obs_dtype=jnp.float32,
                       jit: bool = True) -> Callable[[jax.Array], Rollout]:
  """A function key -> Rollout of `batch_size` episodes of `seq_len` steps.

  Args:
    params: environment parameters; its task table is what the experts solve.
    batch_size: episodes per batch.
    seq_len: steps recorded per episode (≤ params.max_steps). Episodes that are
      not done after `seq_len` steps are truncated (all their steps valid).
    epsilons: each episode draws its ε uniformly from this list (a mix of
      expert qualities, D in the paper; (0.0,) gives D*).
    task_ids: rows of the task table to draw from uniformly (default: all).
    obs_dtype: dtype of the one-hot observations.
    jit: return the function jitted (set False to embed it in a larger jit).
  """
  if not 0 < seq_len <= params.max_steps:
    raise ValueError(f'data.seq_len={seq_len} is invalid: must be in '
                     f'[1, max_steps={params.max_steps}]')
  if batch_size < 1:
    raise ValueError(f'data.batch_size={batch_size} is invalid: must be >= 1')
  for e in epsilons:
    if not 0.0 <= e <= 1.0:
      raise ValueError(f'data.epsilons contains {e}: each ε must be in [0, 1]')
  if task_ids is not None:
    bad = [t for t in task_ids if not 0 <= t < params.num_tasks]
    if bad or not task_ids:
      raise ValueError(f'data.task_ids={list(task_ids)} is invalid: ids must '
                       f'be in [0, {params.num_tasks - 1}]')
  eps_table = jnp.asarray(epsilons, jnp.float32)
  ids = jnp.asarray(task_ids if task_ids is not None
                    else range(params.num_tasks), jnp.int32)

  def one(key):
    k_eps, k_task, k_roll = jax.random.split(key, 3)
    eps = eps_table[jax.random.randint(k_eps, (), 0, eps_table.shape[0])]
    task_id = ids[jax.random.randint(k_task, (), 0, ids.shape[0])]
    return expert.rollout(k_roll, params, eps, seq_len, task_id, obs_dtype)

  def sample(key: jax.Array) -> Rollout:
    return jax.vmap(one)(jax.random.split(key, batch_size))

  return jax.jit(sample) if jit else sample


def stream_from_config(config, split: str = 'pretrain',
                       batch_size: int | None = None,
                       jit: bool = True) -> Callable[[jax.Array], Rollout]:
  """The expert stream of one phase, from configs/gridworld.py.

  split: 'pretrain' (D: pretraining tasks, the ε mix), 'expert' (D*: pretraining
  tasks, ε = 0) or 'post' (the post-training task, ε = 0).
  """
  splits = ('pretrain', 'expert', 'post')
  if split not in splits:
    raise ValueError(f'split={split!r} is invalid: must be one of {splits}')
  if split == 'post':
    params = gw.params_from_config(config.env, tasks=[config.env.post_task])
  else:
    params = gw.params_from_config(config.env)
  epsilons = tuple(config.data.epsilons) if split == 'pretrain' else (0.0,)
  return make_expert_stream(
      params, batch_size or config.data.batch_size,
      config.data.seq_len if split != 'post' else config.data.post_seq_len,
      epsilons, jit=jit)
