"""Ant-pinpad configs (docs/method.md §2.2-§7): the arena, its Brax-PPO
expert, and every phase of the pipeline on the expert's data (a Hawk base
model with Gaussian actions, full-rank edits of its stream).

  python experiments/reproduce.py --config=configs/ant.py:cpu \
      --workdir=/tmp/irl/point
  python experiments/train_expert.py --config=configs/ant.py:cpu \
      --workdir=/tmp/irl/point      # the expert alone

Presets: `paper` (the MuJoCo ant, MJX), `cpu` (the point body on a 2-core
laptop), `test` (the point body, seconds).
"""

import importlib.util
import os

import ml_collections

from irl.envs import registry
from irl.models import presets as models
from irl.utils import config_utils


def _gridworld(preset: str) -> ml_collections.ConfigDict:
  """The gridworld's preset: the phases' sections are shared, and the arena
  overrides what differs."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'gridworld.py')
  spec = importlib.util.spec_from_file_location('_irl_gridworld_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def _phases(c: ml_collections.ConfigDict, preset: str) -> None:
  """Every phase's section, the gridworld preset's with the arena's
  differences (docs/method.md §4-§7, ant column)."""
  grid = _gridworld(preset)
  for name in ('data', 'pretrain', 'eval', 'probe', 'control',
               'metacontroller', 'compile', 'rate_distortion', 'rl'):
    c[name] = grid[name]
  t = c.env.max_steps
  c.data.seq_len = c.data.post_seq_len = t
  c.metacontroller.seq_len = c.compile.seq_len = t
  # D samples the expert's Gaussian at every step (ε = 1: the chance a step
  # samples rather than takes the mean); D* (ε = 0) its mean action.
  c.data.epsilons = (1.0,)
  c.data.episodes_per_row = 1
  c.model = models.hawk(preset)
  c.model.obs_encoder = 'linear'
  # λ = 10 with a unit-variance Gaussian (MSE) over the next observation.
  c.pretrain.obs_loss_weight = 10.0
  # Full-rank edits of the stream (rank 0): the paper's ant controllers and
  # decoder.
  c.control.rank = c.metacontroller.rank = c.compile.rank = 0
  # Fig. 4's depth axis is the gridworld's; here the main model only.
  c.control.depths = (c.model.num_layers,)


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
  _phases(c, 'paper')
  # docs/method.md §4-§7, ant column.
  c.data.batch_size = 512
  c.pretrain.num_steps = 204_800
  c.control.batch_size = 256
  c.control.learning_rate = 3e-4
  c.metacontroller.num_steps = 32_000
  c.metacontroller.batch_size = 128
  c.metacontroller.learning_rate = 3e-4
  c.rl.num_updates = 51_200
  c.rl.batch_size = 256
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
  _phases(c, 'cpu')
  c.data.batch_size = 64
  c.pretrain.num_steps = 4000
  c.pretrain.learning_rate = 1e-3
  c.pretrain.log_every = 50
  c.pretrain.save_every = 500
  c.eval.batch_size = 256
  c.eval.num_batches = 2
  c.eval.num_episodes = 256
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
  _phases(c, 'test')
  c.data.batch_size = 8
  c.pretrain.num_steps = 20
  c.pretrain.log_every = 10
  c.pretrain.save_every = 10
  c.eval.batch_size = 16
  c.eval.num_batches = 1
  c.eval.num_episodes = 16
  return c


def get_config(preset: str = 'cpu') -> ml_collections.ConfigDict:
  """The config of `preset` (`paper`, `cpu`, `test`)."""
  return config_utils.select_preset(
      {'paper': _paper, 'cpu': _cpu, 'test': _test}, preset)
