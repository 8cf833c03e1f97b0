"""Every preset validates; bad fields fail fast naming the field."""

import pytest

from configs import gridworld
from irl import config as config_lib
from irl.utils.config_utils import ConfigError


@pytest.mark.parametrize('preset', ['paper', 'gpu', 'cpu', 'cpu5', 'test'])
def test_presets_validate(preset):
  c = gridworld.get_config(preset)
  assert c.preset == preset
  config_lib.build(c)


def test_cpu5_free_start_follows_the_run_length():
  c = gridworld.get_config('cpu5')
  built = config_lib.build(c)
  assert (built.metacontroller.kl_delay, built.metacontroller.kl_warmup) == (
      built.metacontroller.num_steps // 3,) * 2
  # An overridden length moves the ramp with it; an explicit value wins.
  c.compile.num_steps, c.metacontroller.num_steps = 900, 3000
  c.metacontroller.kl_delay = 0
  built = config_lib.build(c)
  assert (built.compile.kl_delay, built.compile.kl_warmup) == (300, 300)
  assert (built.metacontroller.kl_delay,
          built.metacontroller.kl_warmup) == (0, 1000)


def test_unknown_preset_lists_the_known_ones():
  with pytest.raises(
      ConfigError, match=r"'tpu'.*\['cpu', 'cpu5', 'gpu', 'paper', 'test'\]"):
    gridworld.get_config('tpu')


@pytest.mark.parametrize('field,value,match', [
    ('env.pretrain_tasks', ['0-1-4-5-0-9'],
     r'config\.env\.pretrain_tasks\[0\].*\[0, 7\]'),
    ('env.post_task', '0-1-2-3-8', r'config\.env\.post_task.*\[0, 7\]'),
    ('env.pretrain_tasks', ['0-a'], r'config\.env\.pretrain_tasks\[0\]'),
    ('env.grid_size', 3, r'config\.env\.grid_size=3.*13 distinct cells'),
    ('env.max_steps', 0, r'config\.env\.max_steps=0.*> 0'),
    ('env.max_steps', -5, r'config\.env\.max_steps'),
    ('data.epsilons', [0.0, 1.2], r'config\.data\.epsilons\[1\]=1\.2.*\[0\.0, 1\.0\]'),
    ('data.epsilons', [-0.1], r'config\.data\.epsilons\[0\]'),
    ('data.seq_len', 200, r'config\.data\.seq_len.*max_steps=100'),
    ('data.batch_size', 0, r'config\.data\.batch_size=0'),
    ('data.episodes_per_row', 0, r'config\.data\.episodes_per_row=0'),
    ('eval.temperature', 0.0, r'config\.eval\.temperature=0\.0'),
])
def test_bad_fields_name_the_field(field, value, match):
  c = gridworld.get_config('test')
  section, name = field.split('.')
  c[section][name] = value
  with pytest.raises(ConfigError, match=match):
    config_lib.build(c)


def _leaves(d, prefix=''):
  for k, v in d.items():
    name = f'{prefix}.{k}' if prefix else k
    if hasattr(v, 'items'):
      yield from _leaves(v, name)
    else:
      yield name, v


@pytest.mark.parametrize('preset', ['paper', 'cpu', 'test'])
def test_every_field_can_be_overridden_on_the_command_line(preset):
  """absl's config flags override tuples, not lists (FATAL flags error)."""
  from absl import flags
  from ml_collections import config_flags
  c = gridworld.get_config(preset)
  lists = [name for name, v in _leaves(c) if isinstance(v, list)]
  assert not lists, f'list fields cannot be overridden: {lists}'
  argv = ['prog', '--config.data.epsilons=(0.0, 0.1)', '--config.rl.seeds=(4,)',
          "--config.rl.fig8_methods=('internal',)"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_dict('config', c, flag_values=fv, sys_argv=argv)
  fv(argv)
  assert fv.config.data.epsilons == (0.0, 0.1)
  assert fv.config.rl.seeds == (4,)
  assert fv.config.rl.fig8_methods == ('internal',)
  config_lib.build(fv.config)


@pytest.mark.parametrize('field,value,match', [
    ('model.future_actions', 4, 'future-action heads'),
])
def test_packing_refuses_what_would_read_across_episodes(field, value, match):
  c = gridworld.get_config('test')
  c.data.episodes_per_row = 2
  config_lib.build(c)
  section, name = field.split('.')
  c[section][name] = value
  with pytest.raises(ConfigError,
                     match=r'config\.data\.episodes_per_row.*' + match):
    config_lib.build(c)


def test_a_config_is_built_once_and_a_bad_one_refused_every_time():
  c = gridworld.get_config('test')
  typed = config_lib.build(c)
  assert config_lib.build(gridworld.get_config('test')) is typed   # cached
  assert config_lib.build(typed) is typed
  hash(typed)                          # keys the jitted factories' caches
  assert typed.data.epsilons == tuple(c.data.epsilons)
  assert typed.model['width'] == c.model.width and 'rl' in typed
  c.data.batch_size = 0
  for _ in range(2):
    with pytest.raises(ConfigError, match='data.batch_size=0'):
      config_lib.build(c)


def test_unknown_and_missing_fields_are_named():
  c = gridworld.get_config('test')
  c.rl.num_update = 5
  with pytest.raises(ConfigError, match=r'config\.rl\.num_update is not a '
                     r'field: did you mean config\.rl\.num_updates\?'):
    config_lib.build(c)
  c = gridworld.get_config('test')
  del c.probe['split']
  with pytest.raises(ConfigError, match=r'config\.probe lacks the fields split'):
    config_lib.build(c)


def test_defaults_are_resolved_once_and_follow_a_replacement():
  c = config_lib.build(gridworld.get_config('test'))
  assert gridworld.get_config('test').metacontroller.layer == -1
  assert c.metacontroller.layer == c.model.num_layers // 2
  deeper = config_lib.replace(c, {'model.num_layers': 6})
  assert deeper.metacontroller.layer == deeper.compile.layer == 3
  with pytest.raises(ConfigError, match=r'config\.rl\.method='):
    config_lib.replace(c, {'rl.method': 'ppo'})
  with pytest.raises(ConfigError, match='did you mean config.rl.method'):
    config_lib.replace(c, {'rl.methods': 'internal'})


def test_factory_keys_leave_out_what_the_factory_does_not_read():
  a = gridworld.get_config('test')
  b = gridworld.get_config('test')
  b.seed, b.rl.method, b.pretrain.num_steps = 7, 'raw_action', 40
  key = lambda c: config_lib.factory_key(
      c, sections=('env', 'model', 'pretrain'), zero=['pretrain.num_steps'])
  assert key(a) == key(b) and hash(key(a)) == hash(key(b))
  assert key(a).rl is None and 'rl' not in key(a)
  b.model.width = 64
  assert key(a) != key(b)


def test_checkpoints_written_before_layers_were_resolved_still_match():
  from irl.utils import checkpoint as ckpt_lib
  saved = {'model': {'num_layers': 4}, 'metacontroller': {'layer': -1}}
  now = {'model': {'num_layers': 4}, 'metacontroller': {'layer': 2}}
  assert ckpt_lib.fingerprint_diff(saved, now) == []
  now['metacontroller']['layer'] = 3
  assert ckpt_lib.fingerprint_diff(saved, now) == [
      'metacontroller.layer: checkpoint=-1, config=3']


def test_a_fig4_depth_variant_keeps_only_what_it_runs():
  from irl.analysis import controllability
  c = gridworld.get_config('test')
  c.compile.layer = 2          # fits the main model, not a 1-layer one
  shallow = controllability.depth_config(c, 1)
  assert shallow.model.num_layers == 1 and 'compile' not in shallow
  assert shallow.control == config_lib.build(c).control
