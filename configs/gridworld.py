"""Gridworld-pinpad configs (PAPER.md §2.1, §3, §4).

Choose a preset on the command line, override any field:
  python experiments/expert_demo.py --config=configs/gridworld.py:cpu \
      --config.data.batch_size=256
Presets: `paper` (GPU/TPU scale), `cpu` (a 2-core laptop), `test` (seconds).
"""

import ml_collections

from irl.models import presets as models
from irl.envs import tasks
from irl.utils import config_utils


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.preset = ''
  c.seed = 0

  c.env = ml_collections.ConfigDict()
  c.env.name = 'gridworld_pinpad'
  c.env.grid_size = 7          # G
  c.env.num_colours = 8        # O
  c.env.num_walls = 4          # W
  c.env.max_steps = 100        # T
  c.env.subgoal_size = 2       # a subgoal is a pair of colours
  c.env.max_visits = 16        # visit log length (>= longest task)
  c.env.pretrain_tasks = [tasks.format_task(t)
                          for t in tasks.GRID_PRETRAIN_TASKS]
  c.env.post_task = tasks.format_task(tasks.GRID_POST_TASK)

  c.data = ml_collections.ConfigDict()
  c.data.batch_size = 1024
  # Steps recorded per pretraining episode. Expert episodes on 6-colour tasks
  # last ~32 steps (max ~65 with ε = 0.2), so 64 wastes little on padding.
  c.data.seq_len = 64
  c.data.post_seq_len = 100    # the 12-colour post-training task needs ~63
  # D: each episode's expert draws ε from this list (PAPER.md §3 sweeps 0..0.2).
  c.data.epsilons = [0.0, 0.05, 0.1, 0.2]

  c.model = models.transformer('paper')

  c.pretrain = ml_collections.ConfigDict()
  c.pretrain.num_steps = 256_000
  c.pretrain.learning_rate = 3e-4     # AdamW, constant
  c.pretrain.weight_decay = 0.03
  # λ of −ln p(a_t|o_1:t) − λ ln p(o_t+1|o_1:t); the next observation is a
  # product of Bernoullis over its 637 one-hot values (summed, not averaged).
  c.pretrain.obs_loss_weight = 0.01
  c.pretrain.grad_clip = 1.0          # global-norm clipping; 0 disables
  c.pretrain.log_every = 100          # optimiser steps per jitted chunk
  c.pretrain.save_every = 2000        # a multiple of log_every
  # Checkpoints kept on disk; the probes of Fig. 3 read every kept one.
  c.pretrain.keep_checkpoints = 16

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 1024            # held-out expert episodes per batch
  c.eval.num_batches = 8
  c.eval.num_episodes = 2048          # closed-loop episodes

  # --- probe + control sections (issue 4) ---
  # --- end probe + control sections ---

  # --- metacontroller sections (issue 5) ---
  # --- end metacontroller sections ---

  c.expert_demo = ml_collections.ConfigDict()
  c.expert_demo.num_episodes = 4096
  c.expert_demo.batch_size = 1024
  return c


def _paper() -> ml_collections.ConfigDict:
  c = _base()
  c.preset = 'paper'
  # --- probe + control overrides (issue 4, paper) ---
  # --- end probe + control overrides ---
  # --- metacontroller overrides (issue 5, paper) ---
  # --- end metacontroller overrides ---
  return c


def _cpu() -> ml_collections.ConfigDict:
  c = _base()
  c.preset = 'cpu'
  # --- probe + control overrides (issue 4, cpu) ---
  # --- end probe + control overrides ---
  # --- metacontroller overrides (issue 5, cpu) ---
  # --- end metacontroller overrides ---
  c.model = models.transformer('cpu')
  c.data.batch_size = 64
  c.pretrain.num_steps = 3000
  c.pretrain.log_every = 50
  c.pretrain.save_every = 500
  c.eval.batch_size = 256
  c.eval.num_batches = 4
  c.eval.num_episodes = 1024
  c.expert_demo.num_episodes = 2048
  return c


def _test() -> ml_collections.ConfigDict:
  c = _base()
  c.preset = 'test'
  # --- probe + control overrides (issue 4, test) ---
  # --- end probe + control overrides ---
  # --- metacontroller overrides (issue 5, test) ---
  # --- end metacontroller overrides ---
  c.model = models.transformer('test')
  c.data.batch_size = 8
  c.data.seq_len = 48
  c.pretrain.num_steps = 20
  c.pretrain.log_every = 5
  c.pretrain.save_every = 10
  c.eval.batch_size = 16
  c.eval.num_batches = 1
  c.eval.num_episodes = 32
  c.expert_demo.num_episodes = 64
  c.expert_demo.batch_size = 32
  return c


def get_config(preset: str = 'cpu') -> ml_collections.ConfigDict:
  """The named preset; an unknown name raises a ConfigError listing them."""
  return config_utils.select_preset(
      {'paper': _paper, 'cpu': _cpu, 'test': _test}, preset or 'cpu')
