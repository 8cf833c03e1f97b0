"""Every preset validates; bad fields fail fast naming the field."""

import pytest

from configs import gridworld
from irl import config as config_lib
from irl.utils.config_utils import ConfigError


@pytest.mark.parametrize('preset', ['paper', 'gpu', 'cpu', 'cpu5', 'test'])
def test_presets_validate(preset):
  c = gridworld.get_config(preset)
  assert c.preset == preset
  config_lib.validate_gridworld(c)


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
    config_lib.validate_gridworld(c)


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
  config_lib.validate_gridworld(fv.config)


@pytest.mark.parametrize('field,value,match', [
    ('model.future_actions', 4, 'future-action heads'),
])
def test_packing_refuses_what_would_read_across_episodes(field, value, match):
  c = gridworld.get_config('test')
  c.data.episodes_per_row = 2
  config_lib.validate_gridworld(c)
  section, name = field.split('.')
  c[section][name] = value
  with pytest.raises(ConfigError,
                     match=r'config\.data\.episodes_per_row.*' + match):
    config_lib.validate_gridworld(c)


def test_a_config_is_validated_once_and_a_bad_one_every_time():
  from irl.utils import config_utils
  calls = []

  @config_utils.validated_once
  def validate(c):
    calls.append(c.data.batch_size)
    config_utils.check_int(c.data.batch_size, 'data.batch_size', minimum=1)

  c = gridworld.get_config('test')
  validate(c)
  validate(gridworld.get_config('test'))     # equal content: no work
  assert len(calls) == 1
  c.data.batch_size = 0
  for _ in range(2):
    with pytest.raises(ConfigError, match='data.batch_size=0'):
      validate(c)
  assert calls[1:] == [0, 0]
