"""What every entry point in `experiments/` shares: the `--config` flag, and a
user's mistake reported as one line naming the field, not as a traceback.

  _CONFIG = cli.config_flag()
  ...
  if __name__ == '__main__':
    cli.run(main)

A bad value (`ConfigError`), a workdir that belongs to another config
(`CheckpointMismatchError`, `StepNotKeptError`) or a missing input
(`MissingInputError`, which names the command that makes it) ends the run
with `error: <message>` on stderr and exit status 2. Every phase validates
its config before it writes anything, so such a run leaves the workdir as it
was. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from absl import app
from absl import flags
from ml_collections import config_flags

from irl import config as config_lib
from irl.utils import config_utils
from irl.utils import parallel
from irl.utils.checkpoint import (CheckpointMismatchError, MissingInputError,
                                  StepNotKeptError)
from irl.utils.config_utils import ConfigError

USER_ERRORS = (ConfigError, CheckpointMismatchError, StepNotKeptError,
               MissingInputError)
DEFAULT_CONFIG = 'configs/gridworld.py:cpu'

_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False,
    'Join a multi-process run (one process per host) before anything else: '
    'jax.distributed.initialize() reads the coordinator from SLURM, Cloud '
    'TPU or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID. '
    'Every device of every host then trains one data-parallel run '
    '(docs/scaling.md).')


class ConfigFlag:
  """The `--config` flag; `.value` is the typed config (`irl.config.build`:
  validated, defaults resolved; `irl.config.locate`d in `--workdir` when the
  entry point has one), built once per distinct content."""

  def __init__(self, holder: flags.FlagHolder):
    self._holder = holder

  @property
  def value(self) -> config_lib.Config:
    config = config_lib.build(self._holder.value)
    # Inputs that live in the run's workdir (the arena's expert) default
    # to it.
    if 'workdir' in flags.FLAGS and flags.FLAGS.workdir:
      config = config_lib.locate(config, flags.FLAGS.workdir)
    return config


def config_flag(default: str = DEFAULT_CONFIG) -> ConfigFlag:
  """`--config=<file>.py:<preset>` with `--config.<field>=<value>` overrides."""
  return ConfigFlag(config_flags.DEFINE_config_file(
      'config', default, 'Config file and preset.'))


def _fail(message: str) -> NoReturn:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _config_spec(argv: Sequence[str]) -> str:
  for arg in argv:
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
  return DEFAULT_CONFIG


def load_config(spec: str) -> Any:
  """The config of `path[:preset]`, loaded by path."""
  path, _, preset = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_irl_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(preset) if preset else module.get_config()


def unknown_field(argv: Sequence[str]) -> str | None:
  """The message for the first `--config.<path>` override that names no
  field of the config, with the closest fields; None when every one exists."""
  try:
    config = load_config(_config_spec(argv))
  except Exception:  # The config file itself is at fault; absl says how.
    return None
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    path = arg[len('--config.'):].split('=', 1)[0].split('.')
    node = config
    for depth, key in enumerate(path):
      if not hasattr(node, 'keys'):
        break
      if key not in node:
        where = '.'.join(['config'] + path[:depth])
        return str(config_utils.unknown_field_error(where, key, node.keys()))
      node = node[key]
  return None


def _flag_error(e: flags.Error) -> str:
  # A config file that raised while loading arrives as a flags.Error holding
  # the whole traceback as text; its last exception line is the message.
  text = str(e)
  for line in reversed(text.splitlines()):
    if 'Error: ' in line:
      return line.split('Error: ', 1)[1]
  return text.splitlines()[0]


def _parse(argv: list[str]) -> list[str]:
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    _fail(f'{_flag_error(e)}\nPass --helpshort or --helpfull to see help on '
          'flags.')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections applies `--config.<field>=` overrides while parsing and
    # raises these, not flags.Error, for a field that does not exist.
    _fail(unknown_field(argv) or f'bad flag: {e}')
  if 'config' in flags.FLAGS:
    try:  # ml_collections defers a config file's load error to first use.
      flags.FLAGS.config.keys()
    except OSError:
      _fail(f'--config={_config_spec(argv)} names no readable config file '
            '(write --config=<file>.py:<preset>, e.g. '
            f'--config={DEFAULT_CONFIG})')
  return rest


def workdir_flag(help_text: str) -> flags.FlagHolder:
  """The required `--workdir`, refused when empty."""
  holder = flags.DEFINE_string('workdir', None, help_text, required=True)
  flags.register_validator('workdir', bool,
                           message='--workdir must name a folder')
  return holder


def run(main: Callable[[list[str]], Any]) -> None:
  """`app.run(main)`, with user errors as one line and exit status 2."""

  def guarded(argv: list[str]) -> Any:
    if _DISTRIBUTED.value:
      parallel.initialize()
    try:
      return main(argv)
    except USER_ERRORS as e:
      _fail(str(e))

  app.run(guarded, flags_parser=_parse)
