"""irl/acting.py: the one closed loop every phase runs through."""

import jax
import jax.numpy as jnp
import numpy as np

from irl import acting
from irl import config as config_lib
from irl.envs import gridworld_pinpad as gw
from configs import gridworld


def _counter_env(length):
  """Episode b ends after length[b] steps with reward 1; obs is the time."""
  def reset(key, num_envs):
    del key
    return jnp.zeros((num_envs,), jnp.int32), jnp.zeros((num_envs, 1))

  def step(t, action):
    t = t + 1 + 0 * action
    done = t >= length
    return t, t[:, None].astype(jnp.float32), done.astype(jnp.float32), done, {}

  return acting.BatchedEnv(reset=reset, step=step)


def test_unroll_masks_finished_episodes_and_keys_each_step():
  length = jnp.array([1, 3, 5])
  env = _counter_env(length)

  def policy(count, obs, env_state, key):
    del env_state
    return jax.random.randint(key, obs.shape[:1], 0, 4), count + 1, {
        'seen': obs[:, 0]}

  state, obs = env.reset(jax.random.key(0), 3)
  key = jax.random.key(1)
  state, count, done, trace = acting.unroll(env, policy, state, obs, 0, key, 6)
  assert int(count) == 6 and done.tolist() == [True, True, True]
  live = np.asarray(trace.live)                      # [T, B]
  np.testing.assert_array_equal(live.sum(0), [1, 3, 5])
  # One reward per episode, at its last live step; nothing after done.
  np.testing.assert_array_equal(np.asarray(trace.reward).sum(0), [1, 1, 1])
  np.testing.assert_array_equal(np.asarray(trace.extras['seen'])[:, 2],
                                np.arange(6))
  # Step t's policy key is split(key, T)[t].
  expected = [jax.random.randint(k, (3,), 0, 4)
              for k in jax.random.split(key, 6)]
  np.testing.assert_array_equal(trace.action, np.stack(expected))


def test_sample_actions_tempered_log_prob_and_per_episode_keys():
  logits = jnp.log(jnp.array([[0.7, 0.1, 0.1, 0.1]] * 2))
  action, log_prob = acting.sample_actions(logits, jax.random.key(0), 0.5)
  p = jax.nn.softmax(logits / 0.5)
  np.testing.assert_allclose(log_prob, jnp.log(p[jnp.arange(2), action]),
                             rtol=1e-6)
  keys = jax.random.split(jax.random.key(0), 2)
  a2, _ = acting.sample_actions(logits, keys, 1.0)
  assert a2.tolist() == [int(jax.random.categorical(k, jax.nn.log_softmax(l)))
                         for k, l in zip(keys, logits)]


def test_batched_gridworld_matches_a_vmap_of_the_single_episode_env():
  params = config_lib.env_params(gridworld.get_config('test'))
  env = acting.batched(gw.reset, gw.step, params)
  key = jax.random.key(2)
  state, obs = env.reset(key, 4)
  ref_state, ref_obs = jax.vmap(gw.reset, in_axes=(0, None))(
      jax.random.split(key, 4), params)
  np.testing.assert_array_equal(obs, ref_obs)
  action = jnp.array([0, 1, 2, 3])
  out = env.step(state, action)
  ref = jax.vmap(gw.step, in_axes=(0, 0, None))(ref_state, action, params)
  unkey = lambda x: (jax.random.key_data(x)
                     if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(unkey(a), unkey(b))


def test_gaussian_actions_scale_their_spread_with_the_temperature():
  mean = jnp.array([[0.5, -0.5]] * 4000)
  log_std = jnp.log(jnp.full_like(mean, 0.2))
  for temperature in (1.0, 0.5):
    action, log_prob = acting.sample_gaussian(mean, log_std,
                                              jax.random.key(0), temperature)
    std = 0.2 * temperature
    np.testing.assert_allclose(np.std(action, 0), [std, std], rtol=0.05)
    expected = jax.scipy.stats.norm.logpdf(action, mean, std).sum(-1)
    np.testing.assert_allclose(log_prob, expected, rtol=1e-5, atol=1e-5)
