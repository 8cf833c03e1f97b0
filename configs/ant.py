"""Ant-pinpad configs (docs/method.md §2.2, §3). So far: the environment and
its expert; the base model and the later phases come next.

  python experiments/train_expert.py --config=configs/ant.py:cpu \
      --workdir=/tmp/irl/point

Presets: `paper` (the MuJoCo ant, MJX), `cpu` (the point body on a 2-core
laptop), `test` (the point body, seconds).
"""

import ml_collections

from irl.envs import registry
from irl.utils import config_utils


def _base(env: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.preset = ''
  c.seed = 0
  # The arena's defaults (irl/envs/registry.py): G = 4, 2 m cells, O = 4
  # colours, W = 1 wall, T = 500, the paper's ant tasks.
  c.env = registry.get(env).default_config()

  # The expert: Brax's PPO (brax.training.agents.ppo) on every pretraining
  # task. The paper's expert is an SSM policy trained 256k steps; its
  # settings are not given beyond the entropy cost (3e-4) and a constant
  # rate, so these are Brax's usual MJX-ant settings.
  c.expert = ml_collections.ConfigDict()
  c.expert.num_timesteps = 100_000_000
  c.expert.num_envs = 2048
  c.expert.batch_size = 1024
  c.expert.num_minibatches = 32
  c.expert.unroll_length = 10
  c.expert.num_updates_per_batch = 4
  c.expert.learning_rate = 3e-4
  c.expert.entropy_cost = 3e-4
  c.expert.discounting = 0.97
  c.expert.reward_scaling = 1.0
  c.expert.normalize_observations = True
  # Weight of the shaping reward: velocity along the grid's shortest-path
  # move (m/s), beside the sparse success reward 1 (docs/method.md §3).
  c.expert.progress_weight = 1.0
  c.expert.seed = 0
  c.expert.eval_episodes = 1024     # per task set, deterministic policy
  return c


def _paper() -> ml_collections.ConfigDict:
  c = _base('ant_pinpad')
  c.preset = 'paper'
  return c


def _cpu() -> ml_collections.ConfigDict:
  c = _base('point_pinpad')
  c.preset = 'cpu'
  # The point crosses a 2 m cell in 8 steps of 0.25 s; 100 steps leave room
  # for a 4-colour task.
  c.env.max_steps = 100
  # Success peaks near 1M steps (0.85 deterministic, 2.6 min on 2 cores)
  # and then falls as PPO learns to farm the shaping reward (0.60 at 6M):
  # docs/method.md §3.
  c.expert.num_timesteps = 1_000_000
  c.expert.num_envs = 256
  c.expert.batch_size = 256
  c.expert.num_minibatches = 16
  c.expert.unroll_length = 8
  c.expert.entropy_cost = 1e-3
  c.expert.eval_episodes = 256
  return c


def _test() -> ml_collections.ConfigDict:
  c = _cpu()
  c.preset = 'test'
  c.env.max_steps = 20
  c.expert.num_timesteps = 256
  c.expert.num_envs = 16
  c.expert.batch_size = 16
  c.expert.num_minibatches = 2
  c.expert.unroll_length = 4
  c.expert.num_updates_per_batch = 1
  c.expert.eval_episodes = 16
  return c


def get_config(preset: str = 'cpu') -> ml_collections.ConfigDict:
  """The config of `preset` (`paper`, `cpu`, `test`)."""
  return config_utils.select_preset(
      {'paper': _paper, 'cpu': _cpu, 'test': _test}, preset)
