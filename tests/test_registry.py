"""irl/envs/registry.py: environments by name."""

import jax
import numpy as np
import pytest

from configs import gridworld
from irl import config as config_lib
from irl.envs import registry
from irl.train import pretrain
from irl.utils.config_utils import ConfigError


def test_unknown_environment_is_refused_naming_the_choices():
  with pytest.raises(ValueError, match=r"env.name='ant'.*gridworld_pinpad"):
    registry.get('ant')
  c = gridworld.get_config('test')
  c.env.name = 'ant'
  with pytest.raises(ConfigError, match=r'env\.name.*gridworld_pinpad'):
    config_lib.build(c)


def test_registering_a_name_twice_is_refused():
  with pytest.raises(ValueError, match='already registered'):
    registry.register(registry.GRIDWORLD)


def test_gridworld_entry_sizes_the_model_and_rolls_out_its_expert():
  c = gridworld.get_config('test')
  env = registry.from_config(c)
  params = config_lib.env_params(c)
  assert registry.GRIDWORLD.default_config().to_dict() == {
      k: v for k, v in gridworld.get_config('paper').env.items()}
  m = pretrain.model_config(c)
  assert (m.obs_dim, m.action_type, m.num_actions, m.grid_size) == (
      env.observation_size(params), 'discrete', 4, params.grid_size)
  ep = env.expert_rollout(jax.random.key(0), params, 0.0, params.max_steps)
  assert bool(ep.success)
  image, labels = env.render_observation(np.asarray(ep.obs[0]), params)
  assert image.dtype == np.uint8 and image.ndim == 3
  assert len(labels) == params.num_colours
