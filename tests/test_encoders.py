"""The egocentric observation encoder re-centres the grid on the agent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl.envs import gridworld_pinpad as gw
from irl.models import BaseModel, ModelConfig
from irl.models.encoders import egocentric_view

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
