"""Resumable, fingerprinted checkpoints of a training-state pytree (orbax).

Layout: `<workdir>/checkpoints/<name>/<step>/{state,meta}`, where `state` is the
pytree (orbax StandardSave) and `meta` a JSON item holding the config
fingerprint and a manifest of every leaf's path, shape and dtype. Both items sit
in the same step directory, which orbax writes under a temporary name and
renames when complete, so a run killed mid-save leaves the previous step as the
latest one and the half-written directory is removed on the next start.

Typical use in a trainer::

  ckpt = Checkpointer(f'{workdir}/checkpoints/pretrain', save_every=1000,
                      fingerprint=config_fingerprint(config, ['model', 'pretrain']))
  state, start_step = ckpt.restore_or_init(init_state)
  for step in range(start_step + 1, num_steps + 1):
    state, metrics = update(state, batch)      # state now holds `step` updates
    ckpt.maybe_save(step, state)
  ckpt.maybe_save(num_steps, state, force=True)
  ckpt.close()
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from irl.utils import closing
from irl.utils import parallel
from irl.utils.config_utils import to_jsonable

PyTree = Any

_STATE = 'state'
_META = 'meta'


class _QuietOrbax(logging.logging.Filter):
  """Drops orbax's INFO chatter (dozens of lines per save); keeps warnings."""

  def filter(self, record) -> bool:
    return (record.levelno >= logging.logging.WARNING
            or 'orbax' not in record.pathname)


logging.get_absl_handler().addFilter(_QuietOrbax())
_MISSING = '<missing>'
# An added field whose value older checkpoints did not record (the θ step an
# RL run started from): such a checkpoint loads under any value, as before
# the field joined; every checkpoint written since records and checks it.
UNRECORDED = '<unrecorded>'


class CheckpointMismatchError(ValueError):
  """A saved checkpoint does not belong to the current config or state layout."""


def _is_typed_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _encode_keys(tree: PyTree) -> PyTree:
  # Typed keys (`jax.random.key`) are stored as their raw uint32 key data so the
  # on-disk format does not depend on orbax's support for extended dtypes; the
  # init_state passed to restore tells which leaves to wrap back and with which impl.
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_typed_key(x) else x, tree)


def _decode_keys(restored: PyTree, like: PyTree) -> PyTree:
  return jax.tree.map(
      lambda r, l: jax.random.wrap_key_data(r, impl=jax.random.key_impl(l)) if _is_typed_key(l) else r,
      restored,
      like,
  )


def _leaf_spec(x: Any) -> dict[str, Any]:
  if hasattr(x, 'dtype') and hasattr(x, 'shape'):
    return {'shape': [int(d) for d in x.shape], 'dtype': str(x.dtype)}
  # Python scalars: record the type so an int step is not restored as a float.
  return {'shape': [], 'dtype': type(x).__name__}


def leaf_manifest(tree: PyTree) -> dict[str, dict[str, Any]]:
  """Maps each leaf's path (jax keystr, e.g. `.params['w']`) to its shape and dtype."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(path): _leaf_spec(x) for path, x in leaves}


def _flatten(d: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(d, dict) and d:
    out: dict[str, Any] = {}
    for k, v in d.items():
      out.update(_flatten(v, f'{prefix}.{k}' if prefix else str(k)))
    return out
  return {prefix: d}


def fingerprint_diff(saved: dict[str, Any], current: dict[str, Any],
                     added_fields: Mapping[str, Any] | None = None
                     ) -> list[str]:
  """Lines `field: checkpoint=X, config=Y` for every dotted field that differs.

  added_fields: dotted fields that joined the fingerprint after checkpoints
  were written, each with the value those checkpoints were trained under; a
  saved fingerprint without the field matches a config holding that value
  (any value where it is `UNRECORDED`).
  A saved `metacontroller.layer` or `compile.layer` of -1 (written before
  `irl.config.build` resolved it) matches the middle of its model, L // 2.
  """
  a, b = _flatten(saved), _flatten(current)
  added = dict(added_fields or {})
  lines = []
  for field in sorted(set(a) | set(b)):
    x, y = a.get(field, _MISSING), b.get(field, _MISSING)
    if x is _MISSING and field in added and added[field] in (y, UNRECORDED):
      continue
    if (field.endswith(('metacontroller.layer', 'compile.layer')) and x == -1
        and y == a.get('model.num_layers', -2) // 2):
      continue
    if x != y:
      fmt = lambda v: v if v is _MISSING else json.dumps(v)
      lines.append(f'{field}: checkpoint={fmt(x)}, config={fmt(y)}')
  return lines


def manifest_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """Lines naming every leaf path whose presence, shape or dtype differs."""
  lines = []
  for path in sorted(set(saved) | set(current)):
    if path not in current:
      lines.append(f'{path}: in checkpoint ({_fmt_spec(saved[path])}) but not in init_state')
    elif path not in saved:
      lines.append(f'{path}: in init_state ({_fmt_spec(current[path])}) but not in checkpoint')
    elif saved[path] != current[path]:
      lines.append(f'{path}: checkpoint={_fmt_spec(saved[path])}, init_state={_fmt_spec(current[path])}')
  return lines


def _fmt_spec(spec: dict[str, Any]) -> str:
  return f'{spec["dtype"]}{tuple(spec["shape"])}'


class StepNotKeptError(ValueError):
  """A run went past the step asked for and did not keep its checkpoint."""


class MissingInputError(FileNotFoundError):
  """A phase's input (a finished earlier run) is not in the workdir; the
  message names the command that makes it."""


class Checkpointer(closing.Closing):
  """Saves and restores one training-state pytree under `directory` with orbax.

  Args:
    directory: root of this job's checkpoints, `<workdir>/checkpoints/<name>`.
    save_every: `maybe_save` writes when `step % save_every == 0`.
    max_to_keep: number of most recent checkpoints kept on disk.
    fingerprint: JSON-able dict of the config fields that fix the shapes and
      meaning of the state (see `config_utils.config_fingerprint`); a
      checkpoint whose fingerprint differs is refused, never overwritten.
    async_save: write in a background thread. Device-to-host copies happen
      before `maybe_save` returns, so the caller may donate/overwrite the state
      right away; `wait()`/`close()` block until the write is committed.
    added_fields: see `fingerprint_diff` (older checkpoints stay readable
      when a field joins the fingerprint with the value they were trained
      under).
  """

  def __init__(
      self,
      directory: str | os.PathLike[str],
      *,
      save_every: int,
      max_to_keep: int = 3,
      fingerprint: dict[str, Any],
      async_save: bool = True,
      added_fields: Mapping[str, Any] | None = None,
  ):
    if int(save_every) < 1:
      raise ValueError(f'save_every must be >= 1, got {save_every}')
    if int(max_to_keep) < 1:
      raise ValueError(f'max_to_keep must be >= 1, got {max_to_keep}')
    self.directory = os.path.abspath(os.fspath(directory))
    self.save_every = int(save_every)
    # Round-trip through JSON so tuples/lists and numpy scalars compare equal
    # to what is read back from disk.
    self.fingerprint = json.loads(json.dumps(to_jsonable(fingerprint, strict=True)))
    self.added_fields = json.loads(json.dumps(
        to_jsonable(dict(added_fields or {}), strict=True)))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=int(max_to_keep),
        create=True,
        # Removes `<step>.orbax-checkpoint-tmp*` left by a run killed mid-save.
        # Only a folder with content can hold them; skipping the (background)
        # cleanup otherwise means no orbax thread outlives a Checkpointer
        # opened only to find that a run is missing (`close` does not wait
        # for it), so such a folder can be removed again at once.
        cleanup_tmp_directories=bool(os.path.isdir(self.directory)
                                     and os.listdir(self.directory)),
        enable_async_checkpointing=async_save,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def read_meta(self, step: int) -> dict[str, Any]:
    """The JSON `meta` item (fingerprint and leaf manifest) of a saved step."""
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))
    except (FileNotFoundError, KeyError, ValueError) as e:
      raise CheckpointMismatchError(
          f'checkpoint {self.directory}/{step} has no readable fingerprint ({e}); it was not written '
          'by irl.utils.checkpoint.Checkpointer. Use a fresh --workdir.'
      ) from e
    return restored[_META]

  def restore_or_init(self, init_state: PyTree) -> tuple[PyTree, int]:
    """Returns (latest saved state, its step), or (init_state, 0) if none exists.

    `init_state` fixes the tree structure, shapes, dtypes (and sharding) of the
    result; raw uint32 and typed (`jax.random.key`) PRNG keys both work.

    Raises:
      CheckpointMismatchError: the saved fingerprint differs from the current
        one, or the saved leaves differ from `init_state` in path, shape or dtype.
    """
    step = self.latest_step()
    if step is None:
      logging.info('No checkpoint in %s; starting from step 0.', self.directory)
      return init_state, 0
    return self.restore_at(step, init_state), step

  def restore_up_to(self, num_steps: int, init_state: PyTree,
                    field: str = 'num_steps') -> tuple[PyTree, int]:
    """(state, step) of a run meant to end at `num_steps`: the latest
    checkpoint up to it (a run to resume), or (init_state, 0); a run that went
    past `num_steps` gives exactly that step, never a later one in its place.

    Raises:
      StepNotKeptError: the run went past `num_steps` without keeping it
        (`field` names the config field in the message).
      CheckpointMismatchError: as in `restore_or_init`.
    """
    steps = self.all_steps()
    if not steps or steps[-1] <= num_steps:
      return self.restore_or_init(init_state)
    if num_steps not in steps:
      raise StepNotKeptError(
          f'config.{field}={num_steps}, but the run in {self.directory} went '
          f'on to step {steps[-1]} and kept only steps {steps}; use one of '
          'those, or a fresh --workdir for a shorter run.')
    return self.restore_at(num_steps, init_state), num_steps

  def restore_at(self, step: int, init_state: PyTree) -> PyTree:
    """Returns the state saved at `step` (e.g. an older kept checkpoint).

    `init_state` fixes structure, shapes and dtypes as in `restore_or_init`,
    and the same fingerprint and leaf-manifest checks apply.

    Raises:
      FileNotFoundError: no complete checkpoint of that step is on disk.
      CheckpointMismatchError: as in `restore_or_init`.
    """
    step = int(step)
    steps = self.all_steps()
    if step not in steps:
      raise FileNotFoundError(
          f'no checkpoint of step {step} in {self.directory}; saved steps: {steps}')
    meta = self.read_meta(step)
    diff = fingerprint_diff(meta.get('fingerprint', {}), self.fingerprint,
                            self.added_fields)
    if diff:
      raise CheckpointMismatchError(
          f'checkpoint {self.directory}/{step} was written with a different config:\n  '
          + '\n  '.join(diff)
          + '\nUse a fresh --workdir, or rerun with the config that wrote this checkpoint.'
      )
    diff = manifest_diff(meta.get('leaves', {}), leaf_manifest(init_state))
    if diff:
      raise CheckpointMismatchError(
          f'checkpoint {self.directory}/{step} does not match the structure of init_state '
          '(the config fingerprint matches, so either the fingerprint lacks a field that '
          'sets these shapes or the code that builds the state changed):\n  '
          + '\n  '.join(diff)
          + '\nUse a fresh --workdir, or the code version that wrote this checkpoint.'
      )

    target = _encode_keys(init_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(target)}))
    state = restored[_STATE]
    # Orbax rebuilds the same tree type from `target`; check anyway, since a
    # silent structural change would surface later as a confusing jit error.
    if jax.tree.structure(state) != jax.tree.structure(target):
      raise CheckpointMismatchError(
          f'restored tree structure {jax.tree.structure(state)} differs from init_state '
          f'{jax.tree.structure(target)}'
      )
    state = jax.tree.map(_like_init, state, init_state)
    state = _decode_keys(state, init_state)
    logging.info('Restored checkpoint %s/%d.', self.directory, step)
    # A run resumes on any number of devices: the arrays go to this run's,
    # whichever device count wrote them (Python scalars stay as given).
    return jax.tree.map(
        lambda x: on_device(x) if isinstance(x, jax.Array) else x, state)

  def maybe_save(self, step: int, state: PyTree, force: bool = False) -> bool:
    """Saves `state` as `step` if `step % save_every == 0` or `force`; returns whether it saved.

    A step that is already on disk (e.g. the step just restored) is not
    rewritten.
    """
    step = int(step)
    if not (force or step % self.save_every == 0):
      return False
    if step in self._manager.all_steps():
      return False
    meta = {'fingerprint': self.fingerprint, 'leaves': leaf_manifest(state), 'step': step}
    args = ocp.args.Composite(
        **{_STATE: ocp.args.StandardSave(_encode_keys(state)), _META: ocp.args.JsonSave(meta)}
    )
    # Our own policy decided; orbax's save_interval_steps must not veto it.
    return bool(self._manager.save(step, args=args, force=True))

  def wait(self) -> None:
    """Blocks until pending async saves are committed (raises their errors)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases orbax's threads."""
    self._manager.wait_until_finished()
    self._manager.close()


def _like_init(restored: Any, init: Any) -> Any:
  # Orbax returns numpy scalars for Python-scalar leaves; give back the type the
  # caller used so e.g. an int step stays a Python int (no retrace of a jit
  # that takes it as a static argument).
  if isinstance(init, (bool, int, float)) and not isinstance(restored, type(init)):
    return type(init)(np.asarray(restored).item())
  return restored


def on_device(tree: Any) -> Any:
  """Commits every array of `tree`, replicated, to the run's devices
  (`parallel.replicate`).

  Restored (committed) and freshly initialised (uncommitted) arrays would
  otherwise make the second call of a jitted training chunk compile again.
  """
  return parallel.replicate(tree)

