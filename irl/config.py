"""Validation of experiment configs, run before anything compiles."""

from __future__ import annotations

import ml_collections

from irl.envs import gridworld_pinpad as gw
from irl.envs import tasks as tasks_lib
from irl.utils.config_utils import ConfigError, check, check_int, check_range


def env_params(config: ml_collections.ConfigDict, post: bool = False
               ) -> gw.EnvParams:
  """EnvParams of the pretraining task table, or of the post-training task."""
  try:
    if post:
      return gw.params_from_config(config.env, tasks=[config.env.post_task])
    return gw.params_from_config(config.env)
  except ValueError as e:
    # EnvParams names its task table `tasks`; point at the config's field.
    msg = str(e)
    msg = (msg.replace('env.tasks[0]', 'env.post_task') if post
           else msg.replace('env.tasks[', 'env.pretrain_tasks['))
    raise ConfigError(f'config.{msg}') from None


def validate_gridworld(config: ml_collections.ConfigDict
                       ) -> ml_collections.ConfigDict:
  """Raises ConfigError naming the field and the allowed values."""
  check(config.env.name == 'gridworld_pinpad', 'env.name',
        f"{config.env.name!r} is not 'gridworld_pinpad'")
  for i, t in enumerate(config.env.pretrain_tasks):
    try:
      tasks_lib.parse_task(t)
    except ValueError:
      raise ConfigError(f"config.env.pretrain_tasks[{i}]={t!r} is invalid: "
                        "write a task as colours joined by '-', e.g. '0-1-4-5'"
                        ) from None
  params = env_params(config)
  post = env_params(config, post=True)
  d = config.data
  check_int(d.batch_size, 'data.batch_size', minimum=1)
  check_int(d.seq_len, 'data.seq_len', minimum=1)
  check(d.seq_len <= params.max_steps, 'data.seq_len',
        f'{d.seq_len} must be <= env.max_steps={params.max_steps}')
  check_int(d.post_seq_len, 'data.post_seq_len', minimum=1)
  check(d.post_seq_len <= post.max_steps, 'data.post_seq_len',
        f'{d.post_seq_len} must be <= env.max_steps={post.max_steps}')
  check(len(d.epsilons) > 0, 'data.epsilons', 'must list at least one ε')
  for i, e in enumerate(d.epsilons):
    check_range(e, f'data.epsilons[{i}]', 0.0, 1.0)
  return config
