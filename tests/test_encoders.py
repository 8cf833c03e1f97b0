"""The egocentric observation encoder re-centres the grid on the agent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl.envs import gridworld_pinpad as gw
from irl.models import BaseModel, ModelConfig
from irl.models import common
from irl.models.encoders import EgocentricDense, egocentric_view

G, C = 7, 13


def _numpy_view(obs):
  cells = obs.reshape(G, G, C)
  ar, ac = np.argwhere(cells[:, :, -1] == 1)[0]
  view = np.zeros((2 * G - 1, 2 * G - 1, C), np.float32)
  view[:, :, -1] = 1  # outside the grid unless overwritten
  for r in range(G):
    for c in range(G):
      i, j = r - ar + G - 1, c - ac + G - 1
      view[i, j, :-1] = cells[r, c, :-1]
      view[i, j, -1] = 0
  return view.reshape(-1)


def test_egocentric_view_matches_numpy():
  params = gw.EnvParams()
  states, obs = jax.vmap(lambda k: gw.reset(k, params))(
      jax.random.split(jax.random.key(0), 16))
  got = np.asarray(jax.jit(lambda o: egocentric_view(o, G))(obs))
  for i in range(16):
    np.testing.assert_array_equal(got[i], _numpy_view(np.asarray(obs[i])))
  # Batched leading dims [B, T, obs] work the same.
  got2 = np.asarray(egocentric_view(obs.reshape(4, 4, -1), G))
  np.testing.assert_array_equal(got2.reshape(16, -1), got)


def test_model_with_egocentric_encoder_and_validation():
  cfg = ModelConfig(num_layers=1, width=16, num_heads=2, mlp_dim=32,
                    obs_encoder='egocentric_grid')
  model = BaseModel(cfg)
  obs = jax.nn.one_hot(jnp.zeros((2, 3, G * G), jnp.int32), C).reshape(2, 3, -1)
  params = model.init(jax.random.key(0), obs)
  assert params['params']['obs_encoder']['dense']['kernel'].shape == (
      (2 * G - 1) ** 2 * C, 16)
  assert model.apply(params, obs).action_logits.shape == (2, 3, 4)
  with pytest.raises(ValueError, match='obs_encoder'):
    ModelConfig(obs_encoder='cnn').validate()


def test_egocentric_dense_equals_dense_map_of_the_view():
  """The gather-sum encoder has nn.Dense's parameters and values on the view."""
  params = gw.EnvParams()
  keys = jax.random.split(jax.random.key(3), 32)
  states, obs0 = jax.vmap(lambda k: gw.reset(k, params))(keys)
  def walk(state, key):
    action = jax.random.randint(key, (), 0, 4)
    state, obs, *_ = gw.step(state, action, params)
    return state, obs
  _, walked = jax.vmap(lambda s, k: jax.lax.scan(
      walk, s, jax.random.split(k, 20)))(states, keys)      # [32, 20, obs]
  obs = jnp.concatenate([obs0[:, None], walked,
                         jnp.zeros_like(obs0)[:, None]], axis=1)  # + padding
  sparse = EgocentricDense(24, G)
  dense = common.dense(24, jnp.float32)
  p_sparse = sparse.init(jax.random.key(0), obs)
  p_dense = dense.init(jax.random.key(0), egocentric_view(obs, G))
  jax.tree.map(np.testing.assert_array_equal, p_sparse, p_dense)
  p = {'params': {'kernel': p_dense['params']['kernel'],
                  'bias': jax.random.normal(jax.random.key(1), (24,))}}
  want = dense.apply(p, egocentric_view(obs, G))
  got = jax.jit(sparse.apply)(p, obs)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  # Gradients with respect to the kernel agree too.
  loss = lambda f, o: lambda q: jnp.sum(jnp.sin(f(q, o)))
  g_sparse = jax.grad(loss(sparse.apply, obs))(p)
  g_dense = jax.grad(loss(dense.apply, egocentric_view(obs, G)))(p)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
               g_sparse, g_dense)
