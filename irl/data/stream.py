"""Fresh batches of expert episodes, generated under jit (docs/method.md §3).

Data is never stored: `make_expert_stream(...)` returns a pure
`sample(key) -> Rollout` that rolls out a batch of expert episodes. It is cheap
enough to call inside every training step (see benchmarks/env_throughput.py),
and it can be called inside another jitted function.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp

from irl.envs import gridworld_expert
from irl.envs import registry
from irl.utils import parallel

# Every registered expert returns these fields (irl/envs/gridworld_expert.py).
Rollout = gridworld_expert.Rollout


@flax.struct.dataclass
class PackedRollout:
  """Rows that hold several whole expert episodes back to back.

  An episode starts where the one before it in the row ended; the last one
  is cut at the row's end (a prefix is still a valid training sequence).
  `segment` keeps attention within an episode (`BaseModel(segments=...)`),
  so each episode is computed exactly as if it had a row of its own.
  """
  obs: jax.Array          # [B, S, obs_dim] o_t
  next_obs: jax.Array     # [B, S, obs_dim] o_{t+1}
  actions: jax.Array      # [B, S] int32 a_t, or [B, S, A] float32 (continuous)
  valid: jax.Array        # [B, S] bool, a real step of some episode
  segment: jax.Array      # [B, S] int32 episode index within the row
  episodes: jax.Array     # [B] int32 episodes with at least one step in the row


def pack_episodes(episodes: Rollout) -> PackedRollout:
  """K rollouts of one row, fields [K, S, ...], -> one packed row [S, ...]."""
  lengths = episodes.length                                   # [K]
  seq_len = episodes.valid.shape[-1]
  start = jnp.concatenate([jnp.zeros((1,), jnp.int32),
                           jnp.cumsum(lengths)[:-1].astype(jnp.int32)])
  t = jnp.arange(seq_len)
  segment = jnp.sum(t[:, None] >= start[None, 1:], axis=1)    # [S] in 0..K-1
  local = t - start[segment]
  take = lambda x: x[segment, local]
  return PackedRollout(
      obs=take(episodes.obs), next_obs=take(episodes.next_obs),
      actions=take(episodes.actions), valid=take(episodes.valid),
      segment=segment.astype(jnp.int32),
      episodes=jnp.sum(start < seq_len).astype(jnp.int32))


def make_expert_stream(env: registry.Environment, params: Any,
                       batch_size: int, seq_len: int,
                       epsilons: Sequence[float] = (0.0,),
                       task_ids: Sequence[int] | None = None,
                       obs_dtype=jnp.float32,
                       jit: bool = True, episodes_per_row: int = 1
                       ) -> Callable[[jax.Array], Rollout | PackedRollout]:
  """A function key -> Rollout of `batch_size` episodes of `seq_len` steps.

  Args:
    env: the environment, whose expert rolls out the episodes.
    params: environment parameters; its task table is what the experts solve.
    batch_size: episodes per batch.
    seq_len: steps recorded per episode (≤ params.max_steps). Episodes that are
      not done after `seq_len` steps are truncated (all their steps valid).
    epsilons: each episode draws its ε uniformly from this list (a mix of
      expert qualities, D in the paper; (0.0,) gives D*).
    task_ids: rows of the task table to draw from uniformly (default: all).
    obs_dtype: dtype of the one-hot observations.
    jit: return the function jitted (set False to embed it in a larger jit).
    episodes_per_row: K > 1 rolls out K episodes per row and packs them
      (`pack_episodes`): the function returns a `PackedRollout` of
      `batch_size` rows. 1: one episode per row, padded (a `Rollout`).
  """
  if not 0 < seq_len <= params.max_steps:
    raise ValueError(f'data.seq_len={seq_len} is invalid: must be in '
                     f'[1, max_steps={params.max_steps}]')
  if batch_size < 1:
    raise ValueError(f'data.batch_size={batch_size} is invalid: must be >= 1')
  if episodes_per_row < 1:
    raise ValueError(f'data.episodes_per_row={episodes_per_row} is invalid: '
                     'must be >= 1')
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
    return env.expert_rollout(k_roll, params, eps, seq_len, task_id,
                              obs_dtype)

  def sample(key: jax.Array) -> Rollout | PackedRollout:
    # The keys are split over the devices, so each makes its own episodes.
    if episodes_per_row == 1:
      keys = parallel.shard_batch(jax.random.split(key, batch_size))
      batch = jax.vmap(one)(keys)
    else:
      keys = parallel.shard_batch(
          jax.random.split(key, (batch_size, episodes_per_row)))
      batch = jax.vmap(lambda k: pack_episodes(jax.vmap(one)(k)))(keys)
    return parallel.shard_batch(batch)

  return jax.jit(sample) if jit else sample


def stream_from_config(config, split: str = 'pretrain',
                       batch_size: int | None = None,
                       jit: bool = True, pack: bool = False
                       ) -> Callable[[jax.Array], Rollout | PackedRollout]:
  """The expert stream of one phase, from configs/gridworld.py.

  split: 'pretrain' (D: pretraining tasks, the ε mix), 'expert' (D*: pretraining
  tasks, ε = 0) or 'post' (the post-training task, ε = 0).
  pack: 'pretrain' only: `data.episodes_per_row` episodes to a row (the
  pretraining stream); a `PackedRollout` when that is > 1.
  """
  splits = ('pretrain', 'expert', 'post')
  if split not in splits:
    raise ValueError(f'split={split!r} is invalid: must be one of {splits}')
  if pack and split != 'pretrain':
    raise ValueError(f"pack=True is for the 'pretrain' split, not {split!r}")
  env = registry.from_config(config)
  if split == 'post':
    params = env.params_from_config(config.env, tasks=[config.env.post_task])
  else:
    params = env.params_from_config(config.env)
  epsilons = tuple(config.data.epsilons) if split == 'pretrain' else (0.0,)
  return make_expert_stream(
      env, params, batch_size or config.data.batch_size,
      config.data.seq_len if split != 'post' else config.data.post_seq_len,
      epsilons, jit=jit,
      episodes_per_row=config.data.episodes_per_row if pack else 1)
