"""Validation of experiment configs, run before anything compiles."""

from __future__ import annotations

import ml_collections

from typing import Any

from irl import optim
from irl.envs import registry
from irl.envs import tasks as tasks_lib
from irl.utils import config_utils
from irl.utils.config_utils import (ConfigError, check, check_choice,
                                    check_int, check_range)


def env_params(config: ml_collections.ConfigDict, post: bool = False) -> Any:
  """The environment's parameters with the pretraining task table, or with
  the post-training task."""
  env = registry.from_config(config)
  try:
    if post:
      return env.params_from_config(config.env, tasks=[config.env.post_task])
    return env.params_from_config(config.env)
  except ValueError as e:
    # EnvParams names its task table `tasks`; point at the config's field.
    msg = str(e)
    msg = (msg.replace('env.tasks[0]', 'env.post_task') if post
           else msg.replace('env.tasks[', 'env.pretrain_tasks['))
    raise ConfigError(f'config.{msg}') from None


@config_utils.validated_once
def validate_gridworld(config: ml_collections.ConfigDict
                       ) -> ml_collections.ConfigDict:
  """Raises ConfigError naming the field and the allowed values."""
  check_choice(config.env.name, 'env.name', registry.names())
  named = [(f'env.pretrain_tasks[{i}]', t)
           for i, t in enumerate(config.env.pretrain_tasks)]
  for field, t in named + [('env.post_task', config.env.post_task)]:
    try:
      tasks_lib.parse_task(t)
    except ValueError:
      raise ConfigError(f"config.{field}={t!r} is invalid: write a task as "
                        "colours joined by '-', e.g. '0-1-4-5'") from None
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
  check_int(d.episodes_per_row, 'data.episodes_per_row', minimum=1)
  config_utils.check_batch(d.batch_size, 'data.batch_size')
  if 'model' in config:
    validate_model(config.model, max(params.max_steps, post.max_steps))
    if d.episodes_per_row > 1:
      check(config.model.future_actions == 0, 'data.episodes_per_row',
            f'{d.episodes_per_row} packs episodes, and the future-action '
            'heads would read past an episode\'s end: use 1 with '
            f'model.future_actions={config.model.future_actions}')
  if 'pretrain' in config:
    validate_pretrain(config.pretrain)
  if 'eval' in config:
    validate_eval(config.eval)
    for name in ('batch_size', 'num_episodes'):
      config_utils.check_batch(config.eval[name], f'eval.{name}')
  return config


def validate_model(m: ml_collections.ConfigDict, max_steps: int) -> None:
  check_choice(m.backbone, 'model.backbone', ('transformer', 'hawk'))
  check_choice(m.dtype, 'model.dtype', ('float32', 'bfloat16'))
  check_choice(m.obs_encoder, 'model.obs_encoder', ('linear', 'egocentric_grid'))
  for name in ('num_layers', 'width', 'num_heads', 'mlp_dim', 'num_buckets',
               'max_distance', 'conv_width', 'max_len'):
    check_int(m[name], f'model.{name}', minimum=1)
  check_int(m.future_actions, 'model.future_actions', minimum=0)
  check_int(m.attention_window, 'model.attention_window', minimum=0)
  check(all(isinstance(b, int) and 0 <= b < m.num_layers
            for b in m.attention_window_blocks),
        'model.attention_window_blocks',
        f'{m.attention_window_blocks} must hold block indices in '
        f'[0, model.num_layers - 1 = {m.num_layers - 1}]')
  check(m.attention_window == 0 or m.backbone == 'transformer',
        'model.attention_window',
        f'{m.attention_window} needs model.backbone=\'transformer\' (Hawk is '
        'recurrent); use 0')
  check(m.width % m.num_heads == 0, 'model.num_heads',
        f'{m.num_heads} must divide model.width={m.width}')
  check(m.max_distance > m.num_buckets // 2, 'model.max_distance',
        f'{m.max_distance} must exceed model.num_buckets // 2')
  if m.backbone == 'transformer':
    check(m.max_len >= max_steps, 'model.max_len',
          f'{m.max_len} KV-cache slots cannot hold an episode of '
          f'env.max_steps={max_steps} steps')


def validate_pretrain(p: ml_collections.ConfigDict) -> None:
  optim.validate_trainer(p, 'pretrain')
  check_range(p.obs_loss_weight, 'pretrain.obs_loss_weight', 0.0)
  check_range(p.future_action_weight, 'pretrain.future_action_weight', 0.0)
  check_int(p.keep_checkpoints, 'pretrain.keep_checkpoints', minimum=1)


def validate_eval(e: ml_collections.ConfigDict) -> None:
  for name in ('batch_size', 'num_batches', 'num_episodes'):
    check_int(e[name], f'eval.{name}', minimum=1)
  check_range(e.temperature, 'eval.temperature', 0.0, None,
              lo_inclusive=False)
