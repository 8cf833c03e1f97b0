"""Validation, preset selection and serialisation helpers for ml_collections configs.

Configs are Python files returning an `ml_collections.ConfigDict` (big_vision
style); these helpers turn a bad field into an error that names the field, the
value and what would have been accepted, instead of a shape error deep inside
a jitted function.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import difflib
import enum
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from irl.utils import parallel


class ConfigError(ValueError):
  """A config field holds an invalid value."""


def _name(field: str) -> str:
  # Fields are given relative to the config root ('model.backbone'); the
  # message shows them the way they are overridden on the command line.
  return field if field == 'config' or field.startswith('config.') else f'config.{field}'


def _invalid(field: str, value: Any, why: str) -> ConfigError:
  return ConfigError(f'{_name(field)}={value!r} is invalid: {why}')


def check_choice(value: Any, field: str, allowed: Iterable[Any]) -> Any:
  """Raises ConfigError unless `value` is one of `allowed`; returns `value`."""
  allowed = list(allowed)
  if value not in allowed:
    raise _invalid(field, value, f'must be one of {allowed!r}')
  return value


def check_range(
    value: Any,
    field: str,
    lo: float | None = None,
    hi: float | None = None,
    lo_inclusive: bool = True,
    hi_inclusive: bool = True,
) -> Any:
  """Raises ConfigError unless `value` is a real number within [lo, hi] (bounds optional)."""
  lo_bracket = '[' if lo_inclusive else '('
  hi_bracket = ']' if hi_inclusive else ')'
  if lo is not None and hi is not None:
    want = f'must be in {lo_bracket}{lo}, {hi}{hi_bracket}'
  elif lo is not None:
    want = f'must be {">=" if lo_inclusive else ">"} {lo}'
  elif hi is not None:
    want = f'must be {"<=" if hi_inclusive else "<"} {hi}'
  else:
    want = 'must be a real number'
  # bool is an int subclass, but `lr=True` is always a typo.
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise _invalid(field, value, f'{want} (got type {type(value).__name__})')
  if math.isnan(value):
    raise _invalid(field, value, want)
  if lo is not None and (value < lo if lo_inclusive else value <= lo):
    raise _invalid(field, value, want)
  if hi is not None and (value > hi if hi_inclusive else value >= hi):
    raise _invalid(field, value, want)
  return value


def check_int(value: Any, field: str, minimum: int | None = None) -> Any:
  """Raises ConfigError unless `value` is an integer (not bool) and >= `minimum`."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    want = 'must be an integer' + (f' >= {minimum}' if minimum is not None else '')
    raise _invalid(field, value, f'{want} (got type {type(value).__name__})')
  if minimum is not None and value < minimum:
    raise _invalid(field, value, f'must be an integer >= {minimum}')
  return value


def check(cond: bool, field: str, message: str) -> None:
  """Raises ConfigError(`config.<field> is invalid: <message>`) unless `cond`.

  For constraints between fields, e.g.
  `check(c.d_model % c.num_heads == 0, 'model.num_heads', 'must divide model.d_model')`.
  """
  if not cond:
    raise ConfigError(f'{_name(field)} is invalid: {message}')


def check_batch(size: int, field: str) -> None:
  """A batch of `size` (the config field `field`) must split evenly over the
  run's devices (irl/utils/parallel.py)."""
  n = parallel.num_devices()
  if int(size) % n:
    raise ConfigError(
        f'config.{field}={size} does not split over the {n} devices of this '
        f'run: use a multiple of {n}')


def select_preset(presets: Mapping[str, Callable[[], Any]], preset: str) -> Any:
  """Returns `presets[preset]()`; raises ConfigError listing the known presets."""
  if preset not in presets:
    raise ConfigError(
        f'unknown config preset {preset!r}; known presets: {sorted(presets)!r}'
        " (choose one with --config=<file>.py:<preset>)"
    )
  return presets[preset]()


class Section(Mapping):
  """Base of the frozen, typed config sections (`irl.config`).

  A section reads like the ConfigDict it is built from: `s.field`,
  `s['field']`, `'field' in s`, `s.items()`. Subclasses are frozen
  dataclasses, so a section is hashable and can key a jitted factory's cache.
  """

  def _names(self) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(self)
                 if not f.metadata.get('hidden'))

  def __getitem__(self, key: str) -> Any:
    if key not in self._names():
      raise KeyError(key)
    return getattr(self, key)

  def __iter__(self):
    return iter(self._names())

  def __len__(self) -> int:
    return len(self._names())

  def __contains__(self, key: object) -> bool:
    return key in self._names()


def _frozen(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return tuple(_frozen(v) for v in value)
  return value


def unknown_field_error(where: str, key: str, keys: Iterable[str]
                        ) -> ConfigError:
  """'config.<where>.<key> is not a field: did you mean ...?' (closest)."""
  keys = sorted(keys)
  close = difflib.get_close_matches(key, keys, n=1)
  hint = f'did you mean {where}.{close[0]}? ' if close else ''
  return ConfigError(f'{where}.{key} is not a field: {hint}the fields of '
                     f'{where} are {", ".join(keys)}')


def build_section(cls: type, values: Mapping[str, Any], where: str) -> Any:
  """The frozen section `cls` from a config section's fields; ConfigError
  naming an unknown field (and the closest one) or the fields missing.
  Sequences become tuples, so the section is hashable."""
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
  for key in values:
    if key not in fields:
      raise unknown_field_error(_name(where), key, fields)
  missing = [n for n, f in fields.items() if n not in values
             and f.default is dataclasses.MISSING
             and f.default_factory is dataclasses.MISSING]
  if missing:
    raise ConfigError(f'{_name(where)} lacks the fields {", ".join(missing)}')
  return cls(**{k: _frozen(v) for k, v in values.items()})


def to_jsonable(value: Any, *, strict: bool = True) -> Any:
  """Converts configs, dataclasses, numpy/jax values and tuples to plain JSON types.

  Args:
    value: the object to convert.
    strict: if True, raise TypeError on values with no faithful JSON form
      (functions, arbitrary objects); otherwise fall back to `repr` (fine for a
      human-readable dump, not for a fingerprint that must compare equal
      across runs).
  """
  if isinstance(value, ml_collections.FieldReference):
    value = value.get()
  if isinstance(value, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
    value = value.to_dict()
  if value is None or isinstance(value, (bool, str)):
    return value
  if isinstance(value, enum.Enum):
    return to_jsonable(value.value, strict=strict)
  if isinstance(value, int):
    return int(value)
  if isinstance(value, float):
    return float(value)
  if isinstance(value, Mapping):
    return {str(k): to_jsonable(v, strict=strict) for k, v in value.items()}
  if isinstance(value, (list, tuple, set, frozenset)):
    items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
    return [to_jsonable(v, strict=strict) for v in items]
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return {f.name: to_jsonable(getattr(value, f.name), strict=strict) for f in dataclasses.fields(value)}
  if hasattr(value, 'dtype') and hasattr(value, 'shape'):  # numpy / jax arrays and scalars
    if np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.bool_):
      return np.asarray(value).tolist()
  if isinstance(value, (datetime.date, datetime.datetime)):
    return value.isoformat()
  if strict:
    raise TypeError(f'{value!r} (type {type(value).__name__}) has no JSON representation')
  return repr(value)


# `env` fields that name a file, never part of a fingerprint.
LOCATION_FIELDS = ('expert_checkpoint',)


def config_fingerprint(config: ml_collections.ConfigDict, keys: Iterable[str],
                       exclude: Iterable[str] = ()) -> dict[str, Any]:
  """Returns a JSON-able nested dict holding only the named sub-configs/fields.

  `keys` are dotted paths ('model', 'pretrain.seq_len'); the result nests them
  the same way ({'model': {...}, 'pretrain': {'seq_len': 64}}), so a
  Checkpointer reports differences as 'pretrain.seq_len: checkpoint=..'.
  Only fields that fix the shapes or meaning of the saved state belong here:
  a fingerprint that includes e.g. num_steps would refuse to extend a run.
  `exclude` names dotted fields inside those keys to leave out ('env.post_task'
  of a section that matters otherwise); each must exist.
  """
  out: dict[str, Any] = {}
  for key in keys:
    node: Any = config
    for i, part in enumerate(key.split('.')):
      if not isinstance(node, (ml_collections.ConfigDict, Mapping)) or part not in node:
        prefix = '.'.join(key.split('.')[:i]) or 'config'
        raise ConfigError(f'config_fingerprint: {_name(key)} does not exist (no field {part!r} in {_name(prefix)})')
      node = node[part]
    try:
      value = to_jsonable(node, strict=True)
    except TypeError as e:
      raise ConfigError(f'config_fingerprint: {_name(key)} cannot be fingerprinted: {e}') from e
    parts = key.split('.')
    target = out
    for part in parts[:-1]:
      target = target.setdefault(part, {})
    target[parts[-1]] = value
  for key in exclude:
    *parents, last = key.split('.')
    node = out
    for part in parents:
      node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or last not in node:
      raise ConfigError(f'config_fingerprint: cannot exclude {_name(key)}: '
                        'not a field of the fingerprinted keys')
    del node[last]
  # Where an input lives is not what a checkpoint means: a moved workdir
  # still loads.
  env = out.get('env')
  if isinstance(env, dict):
    for field in LOCATION_FIELDS:
      env.pop(field, None)
  return out


def atomic_write_text(path: str, text: str | bytes) -> None:
  """Writes `text` (or bytes) to `path` via a temporary file and rename (on
  the writing process only: `parallel.is_writer`)."""
  if not parallel.is_writer():
    return
  # A run killed mid-write must leave either the old file or the new one.
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'wb' if isinstance(text, bytes) else 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def open_output(path: str, newline: str | None = None) -> Any:
  """`open(path, 'w')` on the writing process (`parallel.is_writer`); on the
  others a sink that keeps what is written in memory."""
  if parallel.is_writer():
    return open(path, 'w', newline=newline)
  return io.StringIO()


def write_json(path: str, data: Any, indent: int | None = 2) -> None:
  """Writes `data` (`to_jsonable`, non-strict) as JSON and a newline to
  `path` via `atomic_write_text` (on the writing process only)."""
  atomic_write_text(
      path, json.dumps(to_jsonable(data, strict=False), indent=indent) + '\n')


def read_json(path: str) -> Any:
  """The JSON value stored in `path`."""
  with open(path) as f:
    return json.load(f)


def load_if_done(path: str, fingerprint: dict) -> dict | None:
  """The JSON record at `path` if it exists and its 'fingerprint' equals
  `fingerprint` (computed under the same config), else None."""
  if not os.path.exists(path):
    return None
  done = read_json(path)
  return done if done.get('fingerprint') == fingerprint else None


def write_csv(path: str, header: Sequence[Any],
              rows: Iterable[Sequence[Any]]) -> None:
  """Writes the CSV file `path`: `header`, then `rows` (on the writing
  process only: `open_output`)."""
  with open_output(path, newline='') as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes `<workdir>/config.json` (indented, human-readable); returns its path.

  A rerun with different overrides keeps the previous file as
  `config.<timestamp>.json`, so the config of every run stays on record.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, 'config.json')
  text = json.dumps(to_jsonable(config, strict=False), indent=2) + '\n'
  if os.path.exists(path) and parallel.is_writer():
    with open(path) as f:
      old = f.read()
    if old != text:
      stamp = datetime.datetime.fromtimestamp(os.path.getmtime(path)).strftime('%Y%m%d-%H%M%S')
      os.replace(path, os.path.join(workdir, f'config.{stamp}.json'))
  atomic_write_text(path, text)
  return path


def from_section(cls: type, section: Mapping[str, Any], *,
                 optional: Iterable[str] = (), **overrides: Any) -> Any:
  """The frozen dataclass `cls` built from the fields of a config section
  that it names (`Section(**config.section)` for the fields both share),
  with `overrides` for the fields the section spells differently or lacks.
  A field of `cls` in neither is an error unless listed in `optional` (then
  it keeps its default). Sequences become tuples, so the result is hashable.
  """
  names = {f.name for f in dataclasses.fields(cls)}
  kwargs = {k: tuple(v) if isinstance(v, (list, tuple)) else v
            for k, v in section.items() if k in names}
  kwargs.update(overrides)
  missing = sorted(names - set(kwargs) - set(optional))
  if missing:
    raise TypeError(f'{cls.__name__} needs {missing}, which the config '
                    'section does not have and no override gives')
  return cls(**kwargs)
