"""The methods of Fig. 8 and their configs (docs/method.md §7-8).

Methods (`rl.method`):
  internal                 the method: metacontroller (learned β, frozen θ)
  no_temporal_abstraction  metacontroller trained with β ≡ 1; β ≡ 1 in RL too,
                           so every raw step is a decision
  cotrained                metacontroller co-trained with θ
                           (`rl.cotrained_base_model`: 'cotrain_scratch' as
                           the paper's grid, or 'cotrain'); its θ is the env's
  compile                  CompILE's abstract actions at the same layer
  raw_action               PPO on the base model's own categorical action head
                           over raw actions (`rl.raw_action_params`: 'all'
                           parameters, or the 'action_head' alone); every raw
                           step is a decision
"""


from __future__ import annotations

import copy

import ml_collections

from irl import config as config_lib
from irl import optim
from irl.envs import tasks as tasks_lib
from irl.rl import policy as policy_lib
from irl.train import metacontroller as mct
from irl.utils import config_utils
from irl.utils.config_utils import check, check_choice, check_int, check_range

# Checkpoints written before these fields existed trained under these values
# (the fingerprint holds the whole metacontroller or compile section).
METHODS = ('internal', 'raw_action', 'no_temporal_abstraction', 'cotrained',
           'compile')
RAW_ACTION_PARAMS = ('all', 'action_head')


@config_utils.validated_once
def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ConfigError naming the first bad `rl.*` field."""
  config_lib.validate_gridworld(config)
  r = config.rl
  check_choice(r.method, 'rl.method', METHODS)
  check(len(r.seeds) > 0, 'rl.seeds', 'must list at least one seed')
  for i, s in enumerate(r.seeds):
    check_int(s, f'rl.seeds[{i}]', minimum=0)
  check(len(set(r.seeds)) == len(r.seeds), 'rl.seeds',
        f'{list(r.seeds)} lists a seed twice')
  for name in ('batch_size', 'num_epochs', 'num_minibatches',
               'keep_checkpoints', 'max_decisions', 'policy_width',
               'policy_heads', 'policy_mlp_dim'):
    check_int(r[name], f'rl.{name}', minimum=1)
  optim.validate_trainer(r, 'rl', 'num_updates', optimiser_steps(r))
  check(r.batch_size % r.num_minibatches == 0, 'rl.num_minibatches',
        f'{r.num_minibatches} must divide rl.batch_size={r.batch_size}')
  check(r.batch_size >= 2, 'rl.batch_size',
        f'{r.batch_size} must be >= 2 (advantages are batch-normalised)')
  config_utils.check_batch(r.batch_size, 'rl.batch_size')
  check(r.policy_width % r.policy_heads == 0, 'rl.policy_heads',
        f'{r.policy_heads} must divide rl.policy_width={r.policy_width}')
  check_range(r.clip_eps, 'rl.clip_eps', 0.0, None, lo_inclusive=False)
  check_range(r.entropy_coef, 'rl.entropy_coef', 0.0)
  check_range(r.advantage_eps, 'rl.advantage_eps', 0.0, None,
              lo_inclusive=False)
  check_range(r.switch_threshold, 'rl.switch_threshold', 0.0, 1.0)
  check_range(r.temperature, 'rl.temperature', 0.0, None, lo_inclusive=False)
  check_range(r.init_log_std, 'rl.init_log_std', policy_lib.LOG_STD_MIN,
              policy_lib.LOG_STD_MAX)
  check_choice(r.raw_action_params, 'rl.raw_action_params', RAW_ACTION_PARAMS)
  check_choice(r.cotrained_base_model, 'rl.cotrained_base_model',
               ('cotrain', 'cotrain_scratch'))
  for i, m in enumerate(r.fig8_methods):
    check_choice(m, f'rl.fig8_methods[{i}]', METHODS)
  config_lib.env_params(config, post=True)
  if r.method in ('internal', 'no_temporal_abstraction', 'cotrained'):
    mct.validate(method_config(config, r.method))
  return config


def method_config(config: ml_collections.ConfigDict, method: str | None = None
                  ) -> ml_collections.ConfigDict:
  """A copy of config with `rl.method` and the metacontroller it reads."""
  c = copy.deepcopy(config)
  c.unlock()
  method = method or c.rl.method
  c.rl.method = method
  if method == 'internal':
    c.metacontroller.switching, c.metacontroller.base_model = 'learned', 'frozen'
  elif method == 'no_temporal_abstraction':
    c.metacontroller.switching, c.metacontroller.base_model = 'always', 'frozen'
  elif method == 'cotrained':
    c.metacontroller.switching = 'learned'
    c.metacontroller.base_model = c.rl.cotrained_base_model
  return c


def task_suffix(config: ml_collections.ConfigDict) -> str:
  """'' for the paper's post-training task, '_task_<task>' for any other, so
  RL runs on several novel tasks share one workdir (and its base model,
  metacontrollers and CompILE) side by side."""
  post = config.env.post_task
  return '' if post == tasks_lib.format_task(tasks_lib.GRID_POST_TASK) else (
      f'_task_{post}')


def run_name(config: ml_collections.ConfigDict) -> str:
  return f'rl_{config.rl.method}{task_suffix(config)}'


def fig8_dir(config: ml_collections.ConfigDict) -> str:
  """Output folder of Fig. 8, relative to the workdir."""
  return f'fig8{task_suffix(config)}'


def decision_slots(config: ml_collections.ConfigDict) -> int:
  """K: `rl.max_decisions` where a learned gate decides when to act;
  env.max_steps where every raw step is a decision (never truncated)."""
  if config.rl.method in ('raw_action', 'no_temporal_abstraction'):
    return int(config.env.max_steps)
  return min(int(config.rl.max_decisions), int(config.env.max_steps))


def policy_config(config: ml_collections.ConfigDict, latent_dim: int
                  ) -> policy_lib.PolicyConfig:
  r = config.rl
  return policy_lib.PolicyConfig(
      latent_dim=latent_dim, width=r.policy_width, num_heads=r.policy_heads,
      mlp_dim=r.policy_mlp_dim, init_log_std=float(r.init_log_std))


def optimiser_steps(r: ml_collections.ConfigDict) -> int:
  """Optimiser steps of an RL run (what its learning-rate schedule counts)."""
  return r.num_updates * r.num_epochs * r.num_minibatches


