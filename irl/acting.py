"""Acting: one way to run a policy in a batched environment (brax's
`acting.py` idea).

Every closed loop in the project goes through `unroll`: the base model's
closed-loop evaluation (`irl.train.evaluate`), the ground-truth controllers'
evaluation (`irl.analysis.control_rollouts`), raw-action RL and internal RL
(`irl.rl.rollouts`, whose "environment" is the internal environment's raw step).
What differs between them is only the policy, a pure function

  policy(policy_state, obs [B, ...], env_state, key) -> (action [B, ...],
                                                         policy_state, extras)

where `policy_state` is whatever the policy carries (a KV cache, a recurrent
state), `env_state` lets an oracle policy read privileged state (the
controllers read which colour of the task is next), and `extras` is a pytree
of per-step records ([B, ...] leaves). The environment is a batched pair of
pure functions (`BatchedEnv`); `batched(reset, step, params)` makes one from
a single-episode environment (`reset(key, params)`, `step(state, action,
params)`, the gridworld's signatures) by `vmap`.

Time runs in a `lax.scan` of `num_steps` steps; an episode that is done stays
in the batch (the gridworld's finished episodes idle) and `Transition.live`
masks it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from irl.utils import parallel

# (policy_state, obs, env_state, key) -> (action, policy_state, extras)
Policy = Callable[[Any, jax.Array, Any, jax.Array], tuple[jax.Array, Any, Any]]


class BatchedEnv(NamedTuple):
  """A batched environment: pure, jittable functions over a leading [B] axis.

  Attributes:
    reset: (key, num_envs) -> (state, obs [B, ...]).
    step: (state, action [B, ...]) -> (state, obs [B, ...], reward [B],
      done [B], info).
  """
  reset: Callable[[jax.Array, int], tuple[Any, jax.Array]]
  step: Callable[[Any, jax.Array], tuple[Any, jax.Array, jax.Array,
                                         jax.Array, Any]]


def batched(reset: Callable, step: Callable, params: Any) -> BatchedEnv:
  """A `BatchedEnv` from a single-episode environment with parameters.

  Episode b of a batch is reset from `jax.random.split(key, num_envs)[b]`.
  """
  def reset_batch(key: jax.Array, num_envs: int):
    return jax.vmap(reset, in_axes=(0, None))(
        jax.random.split(key, num_envs), params)

  def step_batch(state: Any, action: jax.Array):
    return jax.vmap(step, in_axes=(0, 0, None))(state, action, params)

  return BatchedEnv(reset=reset_batch, step=step_batch)


class Transition(NamedTuple):
  """Time-major records of an unroll, leaves [T, B, ...]."""
  obs: jax.Array      # what the policy read at each step
  action: jax.Array
  reward: jax.Array   # [T, B], 0 where not live
  live: jax.Array     # [T, B] bool: the episode was not done before the step
  extras: Any         # the policy's per-step records


def sample_actions(logits: jax.Array, key: jax.Array, temperature: float
                   ) -> tuple[jax.Array, jax.Array]:
  """Categorical actions at a temperature and their log-probabilities.

  Args:
    logits: [B, A].
    key: one key for the batch, or [B] keys (one per episode).

  Returns:
    (action [B] int32, log_prob [B]) under the tempered distribution.
  """
  log_probs = jax.nn.log_softmax(logits / temperature)
  if jnp.ndim(key) == 0:
    action = jax.random.categorical(key, log_probs)
  else:
    action = jax.vmap(jax.random.categorical)(key, log_probs)
  log_prob = jnp.take_along_axis(log_probs, action[:, None], 1)[:, 0]
  return action, log_prob


def sample_gaussian(mean: jax.Array, log_std: jax.Array, key: jax.Array,
                    temperature: float) -> tuple[jax.Array, jax.Array]:
  """Continuous actions from a diagonal Gaussian whose standard deviation is
  scaled by the temperature, and their log-probabilities under it.

  Args:
    mean, log_std: [B, A].
    key: one key for the batch, or [B] keys.

  Returns:
    (action [B, A], log_prob [B]); the environment clips to its range.
  """
  std = jnp.exp(log_std) * temperature
  if jnp.ndim(key) == 0:
    noise = jax.random.normal(key, mean.shape)
  else:
    noise = jax.vmap(lambda k: jax.random.normal(k, mean.shape[1:]))(key)
  action = mean + std * noise
  log_prob = -0.5 * (noise ** 2 + jnp.log(2 * jnp.pi)) - jnp.log(std)
  return action, log_prob.sum(-1)


def sample_head(out: Any, key: jax.Array, temperature: float
                ) -> tuple[jax.Array, jax.Array]:
  """The base model's action at the last step of `out` (a `ModelOutput`):
  categorical (`sample_actions`) or Gaussian (`sample_gaussian`)."""
  if out.action_logits is not None:
    return sample_actions(out.action_logits[:, -1], key, temperature)
  return sample_gaussian(out.action_mean[:, -1], out.action_log_std[:, -1],
                         key, temperature)


def head_log_prob(out: Any, actions: jax.Array, temperature: float
                  ) -> tuple[jax.Array, jax.Array]:
  """(log-probability, entropy), each [B, T], of `actions` under the
  base model's tempered action head (the policy of raw-action RL)."""
  if out.action_logits is not None:
    logits = jax.nn.log_softmax(out.action_logits / temperature)
    logp = jnp.take_along_axis(logits, actions[..., None], -1)[..., 0]
    return logp, -(jnp.exp(logits) * logits).sum(-1)
  log_std = out.action_log_std + jnp.log(temperature)
  z = (actions - out.action_mean) / jnp.exp(log_std)
  logp = (-0.5 * (z ** 2 + jnp.log(2 * jnp.pi)) - log_std).sum(-1)
  entropy = (0.5 * (1.0 + jnp.log(2 * jnp.pi)) + log_std).sum(-1)
  return logp, entropy


def unroll(env: BatchedEnv, policy: Policy, env_state: Any, obs: jax.Array,
           policy_state: Any, key: jax.Array, num_steps: int
           ) -> tuple[Any, Any, jax.Array, Transition]:
  """`num_steps` steps of `policy` in `env` from (env_state, obs).

  Step t draws its policy key from `jax.random.split(key, num_steps)[t]`.

  Returns:
    (env_state, policy_state, done [B], Transition [T, B, ...]) at the end.
  """
  done = jnp.zeros(obs.shape[:1], bool)

  def body(carry, k):
    env_state, obs, policy_state, done = carry
    action, policy_state, extras = policy(policy_state, obs, env_state, k)
    env_state, next_obs, reward, step_done, _ = env.step(env_state, action)
    live = ~done
    record = Transition(obs=obs, action=action,
                        reward=jnp.where(live, reward, 0.0), live=live,
                        extras=extras)
    return (env_state, next_obs, policy_state, done | step_done), record

  (env_state, _, policy_state, done), trajectory = jax.lax.scan(
      body, (env_state, obs, policy_state, done),
      jax.random.split(key, num_steps))
  return env_state, policy_state, done, trajectory


def episodes(env: BatchedEnv, policy: Policy, policy_state: Any,
             num_episodes: int, key: jax.Array, num_steps: int
             ) -> tuple[Any, Any, jax.Array, Transition]:
  """`num_episodes` fresh episodes, reset with the first key of
  `jax.random.split(key)` and sharded over the devices, played for
  `num_steps` steps (`unroll`) with the second."""
  k_reset, k_act = jax.random.split(key)
  env_state, obs = parallel.shard_batch(env.reset(k_reset, num_episodes))
  return unroll(env, policy, env_state, obs, policy_state, k_act, num_steps)


def model_policy(model: Any, params: Any, temperature: float = 1.0
                 ) -> Policy:
  """The base model acting alone: sample its next action with the cache.

  The policy state is the model's decoding cache (`irl.models.init_cache`);
  extras hold the actions' log-probabilities under the tempered model.
  """
  def policy(cache, obs, env_state, key):
    del env_state
    out = model.apply(params, obs[:, None], cache=cache)
    action, log_prob = sample_head(out, key, temperature)
    return action, out.cache, {'log_prob': log_prob}

  return policy
