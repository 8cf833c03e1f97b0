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


from irl import config as config_lib
from irl.config import Config
from irl.config.checks import RL_METHODS
from irl.envs import registry
from irl.envs import tasks as tasks_lib
from irl.rl import policy as policy_lib
from irl.train import metacontroller

# The methods, in the order Fig. 8 lists them.
METHODS = RL_METHODS


def method_config(config: Config, method: str | None = None) -> Config:
  """config with `rl.method` and the metacontroller variant it reads (the
  raw-action and CompILE methods read none: the config's own)."""
  config = config_lib.build(config)
  method = method or config.rl.method
  variant = 'method' if method == 'internal' else method
  if variant in metacontroller.VARIANTS:
    return metacontroller.variant_config(config, variant,
                                         {'rl.method': method})
  return config_lib.replace(config, {'rl.method': method})


def task_suffix(config: Config) -> str:
  """'' for the paper's post-training task, '_task_<task>' for any other, so
  RL runs on several novel tasks share one workdir (and its base model,
  metacontrollers and CompILE) side by side."""
  post = config.env.post_task
  paper = registry.from_config(config).post_task
  return '' if post == tasks_lib.format_task(paper) else f'_task_{post}'


def run_name(config: Config) -> str:
  return f'rl_{config.rl.method}{task_suffix(config)}'


def fig8_dir(config: Config) -> str:
  """Output folder of Fig. 8, relative to the workdir."""
  return f'fig8{task_suffix(config)}'


def decision_slots(config: Config) -> int:
  """K: `rl.max_decisions` where a learned gate decides when to act;
  env.max_steps where every raw step is a decision (never truncated)."""
  if config.rl.method in ('raw_action', 'no_temporal_abstraction'):
    return int(config.env.max_steps)
  return min(int(config.rl.max_decisions), int(config.env.max_steps))


def policy_config(config: Config, latent_dim: int) -> policy_lib.PolicyConfig:
  r = config.rl
  return policy_lib.PolicyConfig(
      latent_dim=latent_dim, width=r.policy_width, num_heads=r.policy_heads,
      mlp_dim=r.policy_mlp_dim, init_log_std=float(r.init_log_std))
