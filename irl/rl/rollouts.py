"""Rollouts of internal RL and raw-action RL: one flat `lax.scan` over the raw
steps, then the decisions compacted to [B, K] (docs/method.md §7).

Choices where the paper is silent:
- Rollouts are one flat `lax.scan` over the T raw steps (finished episodes
  idle, masked); the policy acts at the raw steps where the gate fired. (A
  `while_loop` that stops once every episode is done would, under the vmap
  over seeds, select its whole carry, KV caches included, every step.)
  Decisions are then compacted to [B, K] (K = `rl.max_decisions` for methods
  with a learned gate, env.max_steps when every raw step is a decision, so
  those are never truncated).
- The policy's Gaussian noise for decision k of an episode is keyed by the
  episode's key folded with 2^20 + k (the base model's action noise uses the
  raw time step, < 2^20).
"""


from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from irl import acting
from irl.envs import registry
from irl.models import BaseModel, common, init_cache
from irl.rl import internal_env as ienv
from irl.rl import policy as policy_lib
from irl.utils import parallel

# Folded into an episode's key with its decision count: the policy's noise
# stays apart from the base model's, keyed by the raw time step.
NOISE_OFFSET = 1 << 20


# --------------------------------------------------------------------------
# Rollouts.


@flax.struct.dataclass
class Decisions:
  """A batch of episodes as their decisions, compacted to [B, K].

  Attributes:
    inputs: what the policy reads at each decision: [B, K, n_e] residuals
      (internal) or [B, K, obs_dim] observations (raw action).
    actions: [B, K, n_z] proposals z̃ or [B, K] int32 raw actions.
    log_prob: [B, K] log π_old of the actions.
    valid: [B, K] bool.
    returns: [B] summed reward.
    stats: per-episode [B] statistics (success, raw steps, decisions, ...).
  """
  inputs: jax.Array
  actions: jax.Array
  log_prob: jax.Array
  valid: jax.Array
  returns: jax.Array
  stats: dict


def _compact(fire: jax.Array, slots: int, *records: jax.Array
             ) -> tuple[jax.Array, list[jax.Array]]:
  """Time-major records [T, B, ...] at the steps where fire [T, B] -> [B, K, ...]
  in time order, and the valid mask [B, K]."""
  fire_bt = fire.T
  order = jnp.argsort(~fire_bt, axis=1, stable=True)[:, :slots]   # [B, K]
  valid = jnp.arange(slots)[None] < fire_bt.sum(1)[:, None]
  out = []
  for x in records:
    x = jnp.swapaxes(x, 0, 1)
    idx = order.reshape(order.shape + (1,) * (x.ndim - 2))
    out.append(jnp.take_along_axis(x, idx, axis=1))
  return valid, out


def internal_rollout(env: ienv.InternalEnv, policy: policy_lib.LatentPolicy,
                     batch_size: int, policy_params: Any,
                     frozen: ienv.InternalEnvParams, key: jax.Array
                     ) -> Decisions:
  """B episodes of the policy in the internal environment (one flat loop)."""
  slots = env.max_decisions
  n_z = env.latent_dim

  def policy_fn(pcache, e, state, _):
    # Acts only where the gate fired; the noise is keyed by the episode and
    # its decision count, so the abstract-step schedule draws the same.
    fire = env.fires(state)
    decide = fire & (state.decisions < slots)
    mean, log_std, new_pcache = policy.apply(policy_params, e[:, None],
                                             pcache)
    pcache = common.select_where(decide, new_pcache, pcache)
    mean, log_std = mean[:, 0], log_std[:, 0]
    keys = jax.vmap(jax.random.fold_in)(state.key,
                                        NOISE_OFFSET + state.decisions)
    noise = jax.vmap(lambda k: jax.random.normal(k, (n_z,)))(keys)
    proposal = mean + jnp.exp(log_std) * noise
    log_prob = policy_lib.gaussian_log_prob(proposal, mean, log_std)
    return proposal, pcache, {'log_prob': log_prob, 'decide': decide}

  internal = env.as_env(frozen)
  # Each device steps its own episodes, with its replica of θ, φ and π.
  state, e = parallel.shard_batch(internal.reset(key, batch_size))
  state, _, _, trace = acting.unroll(
      internal, policy_fn, state, e, policy.initial_cache(batch_size), key,
      env.max_steps)
  e, z = trace.obs, trace.action
  logp, decide = trace.extras['log_prob'], trace.extras['decide']
  valid, (e, z, logp) = _compact(decide, slots, e, z, logp)
  return Decisions(inputs=e, actions=z, log_prob=logp, valid=valid,
                   returns=state.episode_return,
                   stats=_episode_stats(state.env, env.env_params,
                                        state.raw_steps, state.decisions,
                                        state.truncated,
                                        state.episode_return))


def _episode_stats(env_state, env_params, raw_steps, decisions, truncated,
                   returns):
  stats = {'raw_steps': raw_steps, 'decisions': decisions,
           'truncated': truncated}
  if not hasattr(env_state, 'task_pos'):   # a scripted test environment
    stats['success'] = returns > 0
  else:
    stats.update(success=env_state.success, colours_done=env_state.task_pos,
                 pairs_done=env_state.task_pos // env_params.subgoal_size)
  return {k: v.astype(jnp.float32) for k, v in stats.items()}


def raw_action_rollout(model: BaseModel, env: registry.Environment,
                       env_params: Any, batch_size: int, temperature: float,
                       params: Any, key: jax.Array) -> Decisions:
  """B episodes of the base model sampling raw actions (its own policy)."""
  batched = env.batched(env_params)
  state, _, _, trace = acting.episodes(
      batched, acting.model_policy(model, params, temperature),
      init_cache(model.config, batch_size), batch_size, key,
      env_params.max_steps)
  swap = lambda x: jnp.swapaxes(x, 0, 1)
  ret = trace.reward.sum(0)
  zeros = jnp.zeros((batch_size,), bool)
  return Decisions(inputs=swap(trace.obs), actions=swap(trace.action),
                   log_prob=swap(trace.extras['log_prob']),
                   valid=swap(trace.live), returns=ret,
                   stats=_episode_stats(state, env_params, state.time,
                                        state.time, zeros, ret))


