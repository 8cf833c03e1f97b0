"""The typed, validated config every phase runs on.

An entry point builds it once from the ml_collections config of `configs/`
(with its `--config.<field>=` overrides):

  config = irl.config.build(flags_config)   # ConfigError names a bad field
  config.metacontroller.layer               # resolved: -1 became L // 2

`build` checks the field names (an unknown one names the closest), builds
one frozen dataclass per section (`irl.config.sections`), runs every
section's checks (`irl.config.checks`) and resolves the defaults that
depend on other sections. The result is hashable: jitted factories are
cached on `factory_key(config, ...)`, the part of the config their
functions read. `replace` derives a variant (a baseline's metacontroller,
a Fig. 4 depth), validated and resolved again. Every public function of
the phases accepts either form and builds (once per distinct content).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from irl.config import checks
from irl.config.checks import env_params, num_subgoals, post_task_pairs
from irl.config.sections import SECTIONS, Config
from irl.envs import registry
from irl.utils import checkpoint as ckpt_lib
from irl.utils import config_utils
from irl.utils.config_utils import ConfigError

__all__ = ['Config', 'ConfigError', 'build', 'replace', 'factory_key',
           'locate', 'expert_path', 'expert_summary_path', 'expert_fingerprint',
           'check_expert_fingerprint', 'env_params', 'num_subgoals',
           'post_task_pairs']

_BUILT: collections.OrderedDict[str, Config] = collections.OrderedDict()
_TOP_LEVEL = tuple(f.name for f in dataclasses.fields(Config)
                   if not f.metadata.get('hidden'))


def build(config: Mapping[str, Any] | Config) -> Config:
  """The typed config of `config` (an ml_collections ConfigDict or a plain
  mapping of sections), validated, with `layer = -1` resolved to L // 2.
  A `Config` is returned as it is. Raises ConfigError naming the field."""
  if isinstance(config, Config):
    return config
  raw = config_utils.to_jsonable(config)
  source = json.dumps(raw, sort_keys=True)
  if source in _BUILT:
    _BUILT.move_to_end(source)
    return _BUILT[source]
  typed = _resolve(_typed(raw, source))
  _BUILT[source] = typed
  if len(_BUILT) > 256:
    _BUILT.popitem(last=False)
  return typed


def _typed(raw: dict[str, Any], source: str) -> Config:
  for name in raw:
    if name not in _TOP_LEVEL:
      raise config_utils.unknown_field_error('config', name, _TOP_LEVEL)
  if 'env' not in raw:
    raise ConfigError('config lacks the section env')
  config_utils.check_choice(raw['env'].get('name'), 'env.name',
                            registry.names())
  env_section = registry.get(raw['env']['name']).section
  values = {}
  for name, value in raw.items():
    cls = env_section if name == 'env' else SECTIONS.get(name)
    if cls is None:
      values[name] = value
    elif not isinstance(value, Mapping):
      raise ConfigError(f'config.{name} must be a section of fields, got '
                        f'{value!r}')
    else:
      values[name] = config_utils.build_section(cls, value, name)
  typed = Config(**values, source=source)
  checks.check_config(typed)
  return typed


def _resolve(config: Config) -> Config:
  # The edited layer's default, -1, is the middle of the base model.
  if 'model' not in config:
    return config
  middle = config.model.num_layers // 2
  changes = {}
  for name in ('metacontroller', 'compile'):
    if name in config and config[name].layer == -1:
      changes[name] = dataclasses.replace(config[name], layer=middle)
  return dataclasses.replace(config, **changes)


def replace(config: Mapping[str, Any] | Config,
            changes: Mapping[str, Any],
            sections: Iterable[str] | None = None) -> Config:
  """`config` with dotted fields changed ({'metacontroller.switching':
  'always'}), built again from the config as given, so it is validated and
  its resolved defaults follow the change (a new model.num_layers moves
  `layer = -1`). sections: keep only these sections (None: all), for a
  variant that other phases' sections need not fit (a Fig. 4 depth)."""
  config = build(config)
  if not config.source:
    raise ValueError('a factory key (factory_key) cannot be rebuilt; '
                     'replace fields of the config it came from')
  raw = json.loads(config.source)
  if sections is not None:
    keep = set(sections) | {'env', 'preset', 'seed'}
    raw = {k: v for k, v in raw.items() if k in keep}
  for path, value in changes.items():
    *parents, leaf = path.split('.')
    node, typed = raw, config
    for part in parents:
      if not isinstance(node.get(part), dict):
        raise ConfigError(f'config.{path} is not a field')
      node, typed = node[part], typed[part]
    if leaf not in typed:
      raise config_utils.unknown_field_error(
          '.'.join(['config'] + parents), leaf, typed)
    node[leaf] = config_utils.to_jsonable(value)
  return build(raw)


def factory_key(config: Mapping[str, Any] | Config, *,
                sections: Iterable[str] | None = None,
                drop: Iterable[str] = (), zero: Iterable[str] = ()
                ) -> Config:
  """A hashable view of what enters a factory's jitted functions.

  `functools.lru_cache`d factories take it, so configs that differ only in
  fields left out here (run length, checkpoint cadence, other phases'
  sections) share the factory and its compilations.

  Args:
    sections: the sections to keep (None: all); the others become None
      (`env` is always kept: every factory sizes its model from it).
    drop: dotted fields to set to None ('control.layers').
    zero: dotted fields to set to 0 (kept, so the factory may read them).
  """
  config = build(config)
  keep = set(_TOP_LEVEL if sections is None else sections) | {'env'}
  # Left out: a section becomes None, the seed 0 and the preset's name ''.
  blank = {'preset': '', 'seed': 0}
  changes: dict[str, Any] = {name: blank.get(name) for name in _TOP_LEVEL
                             if name not in keep}
  fields: dict[str, dict[str, Any]] = {}
  for path, value in [(p, None) for p in drop] + [(p, 0) for p in zero]:
    section, leaf = path.split('.')
    fields.setdefault(section, {})[leaf] = value
  for section, values in fields.items():
    changes[section] = dataclasses.replace(config[section], **values)
  return dataclasses.replace(config, source='', **changes)


def expert_path(workdir: str) -> str:
  """Where a workdir keeps a trained expert policy (the arena's)."""
  return os.path.join(workdir, 'checkpoints', 'expert.msgpack')


def expert_summary_path(workdir: str) -> str:
  """Where it keeps that expert's success rates and training curve."""
  return os.path.join(workdir, 'expert', 'summary.json')


def expert_fingerprint(config: Mapping[str, Any] | Config) -> dict[str, Any]:
  """What an arena expert was trained under: `env` (less the post-training
  task, which is only evaluated, and where the expert lives) and `expert`."""
  return config_utils.config_fingerprint(
      build(config), ['env', 'expert'], exclude=('env.post_task',))


def check_expert_fingerprint(saved: Mapping[str, Any],
                             current: Mapping[str, Any], workdir: str) -> None:
  """Refuses a config whose expert fingerprint `current` (`expert_fingerprint`,
  plus any field the caller checks too) differs from `saved`, the one the
  workdir's expert was trained under (its summary's): every phase in the
  workdir learned from that expert's data, so it is never replaced by
  another. Saved fields that `current` lacks are not compared."""
  saved = {k: v for k, v in saved.items() if k in current}
  diff = ckpt_lib.fingerprint_diff(saved, current)
  if diff:
    raise ckpt_lib.CheckpointMismatchError(
        f'the expert in {workdir} was trained with a different config:\n  '
        + '\n  '.join(diff)
        + '\nEvery phase in this workdir learned from its data. Use a fresh '
        '--workdir, or rerun with the config that trained it.')


def locate(config: Mapping[str, Any] | Config, workdir: str) -> Config:
  """`config` with its workdir defaults filled: an empty
  `env.expert_checkpoint` (the arena's) becomes `expert_path(workdir)`, so
  one workdir holds the expert and every phase that reads its data. A
  config that does not match the expert trained there is refused
  (`check_expert_fingerprint`)."""
  config = build(config)
  if config.env.get('expert_checkpoint', None) == '':
    config = replace(config, {'env.expert_checkpoint': expert_path(workdir)})
  summary_path = expert_summary_path(workdir)
  if ('expert' in config and os.path.exists(summary_path)
      and config.env.expert_checkpoint == expert_path(workdir)):
    with open(summary_path) as f:
      check_expert_fingerprint(json.load(f).get('fingerprint', {}),
                               expert_fingerprint(config), workdir)
  return config
