"""Validation of a typed config: one function per section, run once by
`irl.config.build` before anything compiles or is written.

Each raises `ConfigError` naming the field, its value and what would be
accepted (`config.rl.method='ppo' is invalid: must be one of [...]`). The
allowed values of the choice fields live here too, so every phase reads
them from one place.
"""

from __future__ import annotations

from typing import Any

from irl import optim
from irl.envs import registry
from irl.envs import tasks as tasks_lib
from irl.utils.config_utils import (ConfigError, check, check_batch,
                                    check_choice, check_int, check_range)

BASE_MODEL_MODES = ('frozen', 'cotrain', 'cotrain_scratch')
SWITCHING_MODES = ('learned', 'always')
ENCODER_INITS = ('scratch', 'base_model')
PROBE_SPLITS = ('expert', 'pretrain')
RL_METHODS = ('internal', 'raw_action', 'no_temporal_abstraction',
              'cotrained', 'compile')
RAW_ACTION_PARAMS = ('all', 'action_head')
# The RL policy's log σ over z is clipped to this range.
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def env_params(config: Any, post: bool = False) -> Any:
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


def num_subgoals(config: Any) -> int:
  """K: subgoal ids are colour // subgoal_size, so 4 pairs in the gridworld."""
  return -(-config.env.num_colours // config.env.subgoal_size)


def post_task_pairs(config: Any) -> list[int]:
  """Subgoal ids of the post-training task in order: [0, 1, 2, 3, 0, 1]."""
  return tasks_lib.subgoals(tasks_lib.parse_task(config.env.post_task),
                           config.env.subgoal_size)


def rl_optimiser_steps(r: Any) -> int:
  """Optimiser steps of an RL run (what its learning-rate schedule counts)."""
  return r.num_updates * r.num_epochs * r.num_minibatches


def check_env(config: Any) -> None:
  named = [(f'env.pretrain_tasks[{i}]', t)
           for i, t in enumerate(config.env.pretrain_tasks)]
  for field, t in named + [('env.post_task', config.env.post_task)]:
    try:
      tasks_lib.parse_task(t)
    except ValueError:
      raise ConfigError(f"config.{field}={t!r} is invalid: write a task as "
                        "colours joined by '-', e.g. '0-1-4-5'") from None
  env_params(config)
  env_params(config, post=True)


def check_data(config: Any) -> None:
  d = config.data
  params, post = env_params(config), env_params(config, post=True)
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
  check_batch(d.batch_size, 'data.batch_size')
  if 'model' in config and d.episodes_per_row > 1:
    check(config.model.future_actions == 0, 'data.episodes_per_row',
          f'{d.episodes_per_row} packs episodes, and the future-action '
          'heads would read past an episode\'s end: use 1 with '
          f'model.future_actions={config.model.future_actions}')


def check_model(config: Any) -> None:
  m = config.model
  max_steps = max(env_params(config).max_steps,
                  env_params(config, post=True).max_steps)
  check_choice(m.backbone, 'model.backbone', ('transformer', 'hawk'))
  check_choice(m.dtype, 'model.dtype', ('float32', 'bfloat16'))
  check_choice(m.obs_encoder, 'model.obs_encoder',
               ('linear', 'egocentric_grid'))
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


def check_pretrain(config: Any) -> None:
  p = config.pretrain
  optim.validate_trainer(p, 'pretrain')
  check_range(p.obs_loss_weight, 'pretrain.obs_loss_weight', 0.0)
  check_range(p.future_action_weight, 'pretrain.future_action_weight', 0.0)
  check_int(p.keep_checkpoints, 'pretrain.keep_checkpoints', minimum=1)


def check_eval(config: Any) -> None:
  e = config.eval
  for name in ('batch_size', 'num_batches', 'num_episodes'):
    check_int(e[name], f'eval.{name}', minimum=1)
  check_range(e.temperature, 'eval.temperature', 0.0, None,
              lo_inclusive=False)
  for name in ('batch_size', 'num_episodes'):
    check_batch(e[name], f'eval.{name}')


def check_expert_demo(config: Any) -> None:
  d = config.expert_demo
  for name in ('batch_size', 'num_episodes'):
    check_int(d[name], f'expert_demo.{name}', minimum=1)
  check_batch(d.batch_size, 'expert_demo.batch_size')


def check_expert(config: Any) -> None:
  e = config.expert
  for name in ('batch_size', 'eval_episodes', 'num_envs', 'num_minibatches',
               'num_timesteps', 'num_updates_per_batch', 'unroll_length'):
    check_int(e[name], f'expert.{name}', minimum=1)
  check_int(e.seed, 'expert.seed', minimum=0)
  for name in ('learning_rate', 'reward_scaling'):
    check_range(e[name], f'expert.{name}', 0.0, None, lo_inclusive=False)
  check_range(e.discounting, 'expert.discounting', 0.0, 1.0)
  for name in ('entropy_cost', 'progress_weight'):
    check_range(e[name], f'expert.{name}', 0.0)
  check(isinstance(e.normalize_observations, bool),
        'expert.normalize_observations',
        f'{e.normalize_observations!r} must be True or False')
  check_batch(e.num_envs, 'expert.num_envs')
  check(e.batch_size * e.num_minibatches % e.num_envs == 0,
        'expert.num_envs', f'{e.num_envs} must divide expert.batch_size × '
        f'expert.num_minibatches = {e.batch_size * e.num_minibatches}')


def check_probe(config: Any) -> None:
  p = config.probe
  optim.validate_trainer(p, 'probe')
  for name in ('batch_size', 'eval_episodes', 'eval_batch_size',
               'max_segment_step'):
    check_int(p[name], f'probe.{name}', minimum=1)
  check_int(p.pool_episodes, 'probe.pool_episodes', minimum=0)
  check_choice(p.split, 'probe.split', PROBE_SPLITS)
  for name in ('batch_size', 'eval_batch_size'):
    check_batch(p[name], f'probe.{name}')
  check(isinstance(p.standardize, bool), 'probe.standardize',
        f'{p.standardize!r} must be True or False')
  if p.pool_episodes:
    check(p.pool_episodes >= p.batch_size, 'probe.pool_episodes',
          f'{p.pool_episodes} must be 0 (fresh data) or >= probe.batch_size='
          f'{p.batch_size}')


def check_control(config: Any) -> None:
  c, model = config.control, config.model
  optim.validate_trainer(c, 'control')
  for name in ('batch_size', 'num_episodes', 'eval_batches'):
    check_int(c[name], f'control.{name}', minimum=1)
  for name in ('batch_size', 'num_episodes'):
    check_batch(c[name], f'control.{name}')
  for name in ('rank', 'decoder_hidden', 'depth_pretrain_steps',
               'pool_episodes'):
    check_int(c[name], f'control.{name}', minimum=0)
  if c.pool_episodes:
    check(c.pool_episodes >= c.batch_size, 'control.pool_episodes',
          f'{c.pool_episodes} must be 0 (fresh data) or >= control.batch_size='
          f'{c.batch_size}')
  check_range(c.temperature, 'control.temperature', 0.0, None,
              lo_inclusive=False)
  check(c.rank <= model.width, 'control.rank',
        f'{c.rank} must be <= model.width={model.width}')
  check(len(c.depths) > 0, 'control.depths', 'must list at least one depth')
  for i, d in enumerate(c.depths):
    check_int(d, f'control.depths[{i}]', minimum=1)
  for i, l in enumerate(c.layers):
    check_int(l, f'control.layers[{i}]', minimum=0)
    check(l <= max(c.depths) or l <= model.num_layers,
          f'control.layers[{i}]',
          f'{l} exceeds every base-model depth (model.num_layers='
          f'{model.num_layers}, control.depths={list(c.depths)})')
  pairs = post_task_pairs(config)
  check(max(pairs) < num_subgoals(config), 'env.post_task',
        f'its pairs {pairs} need subgoal ids < {num_subgoals(config)}')
  if c.depth_pretrain_steps:
    check('pretrain' in config, 'control.depth_pretrain_steps',
          f'{c.depth_pretrain_steps} pretrains the Fig. 4 depths: the config '
          'needs a pretrain section')
    check(c.depth_pretrain_steps % config.pretrain.log_every == 0,
          'control.depth_pretrain_steps',
          f'{c.depth_pretrain_steps} must be a multiple of '
          f'pretrain.log_every={config.pretrain.log_every}')


def _check_segmenting(config: Any, section: str, positive: tuple[str, ...],
                      non_negative: tuple[str, ...]) -> Any:
  """The checks the metacontroller's and CompILE's sections share: their
  trainer fields, the integer fields in `positive` (≥ 1) and `non_negative`
  (≥ 0) besides the common ones, the edit's rank, the episode length and
  the switch threshold. Returns the section."""
  s, model = config[section], config.model
  optim.validate_trainer(s, section)
  for name in ('batch_size', 'seq_len', 'keep_checkpoints', 'eval_episodes',
               'eval_batch_size') + positive:
    check_int(s[name], f'{section}.{name}', minimum=1)
  for name in ('seed', 'decoder_hidden', 'rank', 'boundary_tolerance',
               'trace_episodes') + non_negative:
    check_int(s[name], f'{section}.{name}', minimum=0)
  check_int(s.layer, f'{section}.layer', minimum=-1)
  check(s.rank <= model.width, f'{section}.rank',
        f'{s.rank} must be <= model.width={model.width} (0: full rank)')
  check(s.seq_len <= config.env.max_steps, f'{section}.seq_len',
        f'{s.seq_len} must be <= env.max_steps={config.env.max_steps}')
  check(model.backbone != 'transformer' or s.seq_len <= model.max_len,
        f'{section}.seq_len',
        f'{s.seq_len} must be <= model.max_len={model.max_len}')
  check_range(s.switch_threshold, f'{section}.switch_threshold', 0.0, 1.0)
  for name in ('batch_size', 'eval_batch_size'):
    check_batch(s[name], f'{section}.{name}')
  return s


def check_metacontroller(config: Any) -> None:
  m = _check_segmenting(config, 'metacontroller', (
      'latent_dim', 'embed_dim', 'embed_width', 'embed_heads', 'history_dim',
      'encoder_hidden', 'switch_hidden'), ())
  check(m.layer <= config.model.num_layers, 'metacontroller.layer',
        f'{m.layer} must be in [0, model.num_layers={config.model.num_layers}]'
        ' or -1 (L // 2)')
  check(m.embed_width % m.embed_heads == 0, 'metacontroller.embed_heads',
        f'{m.embed_heads} must divide metacontroller.embed_width='
        f'{m.embed_width}')
  check_range(m.kl_weight, 'metacontroller.kl_weight', 0.0)
  optim.check_kl_ramp(m, 'metacontroller')
  check_range(m.decoder_init_scale, 'metacontroller.decoder_init_scale', 0.0)
  check_range(m.switch_bias, 'metacontroller.switch_bias')
  check_choice(m.switching, 'metacontroller.switching', SWITCHING_MODES)
  check_choice(m.base_model, 'metacontroller.base_model', BASE_MODEL_MODES)


def check_compile(config: Any) -> None:
  c = _check_segmenting(config, 'compile', (
      'max_segments', 'latent_dim', 'head_hidden'), ('rl_max_segments',))
  num_layers = config.model.num_layers
  check(c.max_segments >= 2, 'compile.max_segments',
        f'{c.max_segments} must be >= 2 (one boundary at least)')
  check(c.layer != 0 and c.layer <= num_layers, 'compile.layer',
        f'{c.layer} must be in [1, model.num_layers={num_layers}] or -1 '
        '(L // 2)')
  check(c.layer != -1 or num_layers >= 2, 'compile.layer',
        f'-1 (L // 2) needs model.num_layers >= 2, got {num_layers}')
  check_range(c.temperature, 'compile.temperature', 0.0, None,
              lo_inclusive=False)
  check_range(c.prior_rate, 'compile.prior_rate', 1.0, None,
              lo_inclusive=False)
  check_range(c.z_kl_weight, 'compile.z_kl_weight', 0.0)
  check_range(c.b_kl_weight, 'compile.b_kl_weight', 0.0)
  optim.check_kl_ramp(c, 'compile')
  check_choice(c.encoder_init, 'compile.encoder_init', ENCODER_INITS)


def check_rate_distortion(config: Any) -> None:
  r = config.rate_distortion
  check(len(r.kl_weights) > 0, 'rate_distortion.kl_weights',
        'must list at least one α')
  for i, a in enumerate(r.kl_weights):
    check_range(a, f'rate_distortion.kl_weights[{i}]', 0.0)
  check(len(r.seeds) > 0, 'rate_distortion.seeds',
        'must list at least one seed')
  for i, s in enumerate(r.seeds):
    check_int(s, f'rate_distortion.seeds[{i}]', minimum=0)
  check(len(r.base_models) > 0, 'rate_distortion.base_models',
        'must list at least one mode')
  for i, b in enumerate(r.base_models):
    check_choice(b, f'rate_distortion.base_models[{i}]', BASE_MODEL_MODES)
  check_int(r.num_steps, 'rate_distortion.num_steps', minimum=0)
  if 'metacontroller' in config:
    every = config.metacontroller.log_every
    check(r.num_steps % every == 0, 'rate_distortion.num_steps',
          f'{r.num_steps} must be a multiple of metacontroller.log_every='
          f'{every}')
    ramp = config.metacontroller.kl_delay + config.metacontroller.kl_warmup
    check(not r.num_steps or ramp <= r.num_steps, 'rate_distortion.num_steps',
          f'{r.num_steps} must be >= metacontroller.kl_delay + kl_warmup = '
          f'{ramp} (0: metacontroller.num_steps)')
  check_int(r.runs_per_group, 'rate_distortion.runs_per_group', minimum=0)
  check_range(r.f1_threshold, 'rate_distortion.f1_threshold', 0.0, 1.0)


def check_rl(config: Any) -> None:
  r = config.rl
  check_choice(r.method, 'rl.method', RL_METHODS)
  check(len(r.seeds) > 0, 'rl.seeds', 'must list at least one seed')
  for i, s in enumerate(r.seeds):
    check_int(s, f'rl.seeds[{i}]', minimum=0)
  check(len(set(r.seeds)) == len(r.seeds), 'rl.seeds',
        f'{list(r.seeds)} lists a seed twice')
  for name in ('batch_size', 'num_epochs', 'num_minibatches',
               'keep_checkpoints', 'max_decisions', 'policy_width',
               'policy_heads', 'policy_mlp_dim'):
    check_int(r[name], f'rl.{name}', minimum=1)
  optim.validate_trainer(r, 'rl', 'num_updates', rl_optimiser_steps(r))
  check(r.batch_size % r.num_minibatches == 0, 'rl.num_minibatches',
        f'{r.num_minibatches} must divide rl.batch_size={r.batch_size}')
  check(r.batch_size >= 2, 'rl.batch_size',
        f'{r.batch_size} must be >= 2 (advantages are batch-normalised)')
  check_batch(r.batch_size, 'rl.batch_size')
  check(r.policy_width % r.policy_heads == 0, 'rl.policy_heads',
        f'{r.policy_heads} must divide rl.policy_width={r.policy_width}')
  check_range(r.clip_eps, 'rl.clip_eps', 0.0, None, lo_inclusive=False)
  check_range(r.entropy_coef, 'rl.entropy_coef', 0.0)
  check_range(r.advantage_eps, 'rl.advantage_eps', 0.0, None,
              lo_inclusive=False)
  check_range(r.switch_threshold, 'rl.switch_threshold', 0.0, 1.0)
  check_range(r.temperature, 'rl.temperature', 0.0, None, lo_inclusive=False)
  check_range(r.init_log_std, 'rl.init_log_std', LOG_STD_MIN, LOG_STD_MAX)
  check_choice(r.raw_action_params, 'rl.raw_action_params', RAW_ACTION_PARAMS)
  check_choice(r.cotrained_base_model, 'rl.cotrained_base_model',
               BASE_MODEL_MODES[1:])
  for i, m in enumerate(r.fig8_methods):
    check_choice(m, f'rl.fig8_methods[{i}]', RL_METHODS)


# In this order: a section's checks may read the sections checked before it.
CHECKS = (('env', check_env), ('data', check_data), ('model', check_model),
          ('pretrain', check_pretrain), ('eval', check_eval),
          ('expert', check_expert), ('expert_demo', check_expert_demo),
          ('probe', check_probe),
          ('control', check_control),
          ('metacontroller', check_metacontroller),
          ('compile', check_compile),
          ('rate_distortion', check_rate_distortion), ('rl', check_rl))

# The sections a section's checks read besides its own.
NEEDS = {'control': ('model',), 'metacontroller': ('model',),
         'compile': ('model',)}


def check_config(config: Any) -> None:
  """Every present section's checks, in `CHECKS` order; ConfigError on the
  first bad field, or on a section without one it needs (a config may leave
  a phase's sections out)."""
  for name, fn in CHECKS:
    if name not in config:
      continue
    for need in NEEDS.get(name, ()):
      check(need in config, name, f'the {name} section needs a {need} '
            'section beside it')
    fn(config)
