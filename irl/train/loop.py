"""The one job loop every phase runs through.

A phase supplies a pure, jitted `chunk(state) -> (state, metrics)` that runs
`log_every` training steps (a `lax.scan`), and the loop does the rest, the
same way for pretraining, probes, ground-truth controllers, the
metacontroller and its variants, the rate-distortion groups, CompILE and
internal RL: metrics to the host, the step rate, TensorBoard + JSONL
(`MetricsWriter`), the progress line, checkpoints at their cadence (always
at the end), and a brax-style `progress_fn(step, metrics)` hook for callers
that want the numbers as they come (a notebook, a sweep driver).

Every phase's state is one `TrainState`.

`resume` starts or resumes a job (restore up to the run length, move to the
device, open the metrics writer at the restored step); `load_finished`
restores a finished run for the phases that build on it, or says what to run.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import optax
from absl import logging
from jax.tree_util import GetAttrKey

from irl.utils import checkpoint as ckpt_lib
from irl.utils import metrics as metrics_lib
from irl.utils import progress as progress_lib

# (step, host metrics) -> None, called after every chunk.
ProgressFn = Callable[[int, dict], None]


@jax.tree_util.register_pytree_with_keys_class
class TrainState:
  """The training state of every phase: the step, the parameters, the
  optimiser state, the PRNG key of the next steps, and a phase's own leaves
  as keywords (the metacontroller's α `kl_weight`, CompILE's `z_weight` and
  `b_weight`, the probes' `label_counts` and `norm`). A weight that is a leaf
  rather than a constant lets one compiled step serve every value, and runs
  be vmapped over it.

  Extras are read as attributes (`state.kl_weight`) and flattened under
  their own names beside the four fields, so a checkpoint lists every leaf
  at the top level whichever phase wrote it.
  """
  _FIELDS = ('step', 'params', 'opt_state', 'key')

  def __init__(self, step: jax.Array, params: Any, opt_state: Any,
               key: jax.Array, **extras: Any):
    clash = sorted(set(extras) & _RESERVED)
    if clash:
      raise TypeError(f'TrainState extras may not be named {clash}')
    # Frozen like a flax dataclass: a change is a new state (`replace`).
    # step: [] int32 steps taken; key: PRNG key for the data of the next steps.
    for name, value in (('step', step), ('params', params),
                        ('opt_state', opt_state), ('key', key),
                        ('extras', extras)):
      object.__setattr__(self, name, value)

  def __setattr__(self, name: str, value: Any) -> None:
    raise AttributeError(f'TrainState is frozen; use state.replace({name}=...)')

  def __getattr__(self, name: str) -> Any:
    # Only reached when normal lookup fails, i.e. for the extras.
    extras = self.__dict__.get('extras', {})
    if name in extras:
      return extras[name]
    raise AttributeError(f'TrainState has no field {name!r}; extras: '
                         f'{sorted(extras)}')

  def replace(self, **changes: Any) -> TrainState:
    fields = {f: changes.pop(f, getattr(self, f)) for f in self._FIELDS}
    unknown = set(changes) - set(self.extras)
    if unknown:
      raise TypeError(f'TrainState has no fields {sorted(unknown)}')
    return TrainState(**fields, **{**self.extras, **changes})

  def apply_gradients(self, tx: optax.GradientTransformation, grads: Any,
                      **changes: Any) -> TrainState:
    """One optimiser step: the updated params and optimiser state, the step
    counter advanced, and `changes` (e.g. the next `key`) applied."""
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, opt_state=opt_state,
                        params=optax.apply_updates(self.params, updates),
                        **changes)

  def tree_flatten_with_keys(self):
    names = self._FIELDS + tuple(sorted(self.extras))
    return ([(GetAttrKey(n), getattr(self, n)) for n in names],
            tuple(sorted(self.extras)))

  @classmethod
  def tree_unflatten(cls, extra_names, children) -> TrainState:
    return cls(*children[:4], **dict(zip(extra_names, children[4:])))

  def __repr__(self) -> str:
    # Shapes, not values: a state holds whole models.
    shapes = jax.tree.map(lambda x: getattr(x, 'shape', x), self)
    names = self._FIELDS + tuple(sorted(self.extras))
    return 'TrainState(' + ', '.join(
        f'{n}={getattr(shapes, n)}' for n in names) + ')'


def scan_steps(step: Callable[[Any, None], tuple[Any, dict]], state: Any,
               length: int) -> tuple[Any, dict]:
  """`length` steps of `step(state, None) -> (state, metrics)` in one
  `lax.scan`: the state after them and each metric's mean over them."""
  state, metrics = jax.lax.scan(step, state, None, length=length)
  return state, jax.tree.map(lambda x: x.mean(0), metrics)


# Names an extra may not take: they would shadow the state's own attributes.
_RESERVED = frozenset(dir(TrainState)) | {'extras'}


class LoopResult(NamedTuple):
  step: int         # the step reached
  start: int        # the step the loop started from
  seconds: float    # wall time of this call's loop


def resume(checkpointer: ckpt_lib.Checkpointer, num_steps: int,
           init_state: Any, field: str, workdir: str, name: str,
           frozen: Any = None
           ) -> tuple[Any, Any, int, metrics_lib.MetricsWriter]:
  """Starts or resumes the job `name`: restores the latest checkpoint up to
  `num_steps` (`field` names that run length in errors), puts the state and
  `frozen` (inputs that are not trained, e.g. θ) on the device, and opens
  the metrics writer at the restored step.

  Returns:
    (state, frozen, start step, writer).
  """
  state, start = checkpointer.restore_up_to(num_steps, init_state, field)
  state, frozen = ckpt_lib.on_device((state, frozen))
  if start:
    logging.info('resuming %s from step %d', name, start)
  writer = metrics_lib.MetricsWriter(workdir, name, resume_step=start)
  return state, frozen, start, writer


def checkpointer(workdir: str, name: str, section: Any, fingerprint: dict,
                 added_fields: dict | None = None) -> ckpt_lib.Checkpointer:
  """The checkpoints of run `name`, `<workdir>/checkpoints/<name>/`, at
  `section`'s cadence (`save_every`, `keep_checkpoints`), refusing a
  checkpoint whose `fingerprint` differs (see `ckpt_lib.Checkpointer`)."""
  return ckpt_lib.Checkpointer(
      os.path.join(workdir, 'checkpoints', name),
      save_every=section.save_every, max_to_keep=section.keep_checkpoints,
      fingerprint=fingerprint, added_fields=added_fields)


def load_finished(checkpointer: ckpt_lib.Checkpointer, num_steps: int,
                  init_state: Callable[[], Any], field: str, what: str,
                  how: str) -> Any:
  """The state of a finished run (step `num_steps`), for the phases that
  build on it; closes the checkpointer. `init_state()` builds the state's
  structure, only once the run is known to have finished.

  Raises:
    MissingInputError: the run has not reached `num_steps`; the message
      names `what` it is and `how` to make it.
  """
  with checkpointer:
    steps = checkpointer.all_steps()
    if any(s >= num_steps for s in steps):
      state, _ = checkpointer.restore_up_to(num_steps, init_state(), field)
      return state
  _remove_if_empty(checkpointer.directory)   # closed: orbax is done with it
  raise ckpt_lib.MissingInputError(
      f'{checkpointer.directory} holds no finished {what} (latest step '
      f'{max(steps, default=0)}, config.{field}={num_steps}); {how}.')


def _remove_if_empty(directory: str) -> None:
  # Opening a Checkpointer creates its folder; asking for a run that was never
  # started must leave the workdir as it was.
  for d in (directory, os.path.dirname(directory)):
    if os.path.isdir(d) and not os.listdir(d):
      os.rmdir(d)


def run(chunk: Callable[[Any], tuple[Any, dict]], state: Any, *,
        num_steps: int, log_every: int, desc: str, start: int = 0,
        writer: metrics_lib.MetricsWriter | None = None,
        checkpointer: ckpt_lib.Checkpointer | None = None,
        show: Sequence[str] = (),
        scalars: Callable[[dict, float, int], dict] | None = None,
        rate_key: str = 'steps_per_sec',
        progress_fn: ProgressFn | None = None) -> tuple[Any, LoopResult]:
  """Runs `chunk` from step `start` until `num_steps`, `log_every` at a time.

  Args:
    chunk: state -> (state, metrics); one call is `log_every` steps.
    state: the state at `start`.
    desc: the progress line's name.
    writer: where each chunk's scalars go (at the step reached).
    checkpointer: saves at its cadence and at `num_steps` (then waits).
    show: metric names shown on the progress line.
    scalars: (host metrics, seconds of the chunk, step reached) -> the
      scalars to write,
      show and hand to `progress_fn` (default: the metrics as they are);
      `rate_key` (log_every / seconds) is added either way.
    progress_fn: called with (step, scalars) after every chunk.

  Returns:
    (state at the end, LoopResult).
  """
  step = start
  t_start = time.time()
  with progress_lib.Progress(num_steps, start=start, desc=desc) as bar:
    while step < num_steps:
      t0 = time.time()
      state, metrics = chunk(state)
      metrics = jax.device_get(metrics)
      seconds = time.time() - t0
      step += log_every
      metrics = dict(scalars(metrics, seconds, step) if scalars
                     else metrics)
      metrics[rate_key] = log_every / seconds
      if writer is not None:
        writer.write_scalars(step, metrics)
      bar.update(step, {k: metrics[k] for k in show if k in metrics})
      if progress_fn is not None:
        progress_fn(step, metrics)
      if checkpointer is not None:
        checkpointer.maybe_save(step, state, force=step >= num_steps)
  if checkpointer is not None:
    checkpointer.wait()
  return state, LoopResult(step=step, start=start,
                           seconds=time.time() - t_start)


def train_job(chunk: Callable[[Any, Any], tuple[Any, dict]],
              checkpointer: ckpt_lib.Checkpointer, init_state: Any, *,
              section: Any, field: str, name: str, workdir: str,
              frozen: Any = None,
              evaluate: Callable[[Any, Any], dict[str, float]] | None = None,
              summary: dict | None = None, show: Sequence[str] = (),
              scalars: Callable[[dict, float, int], dict] | None = None,
              progress_fn: ProgressFn | None = None) -> dict:
  """A whole training job: resume or start under `checkpointer`, run
  `chunk(state, frozen)` until `section.num_steps` (`section.log_every` at a
  time, `field` naming the run length in errors), evaluate, and write the
  summary beside the metrics of `name`; closes the checkpointer.

  Args:
    frozen: what every step reads but does not train (e.g. θ), or None.
    evaluate: (params, frozen) -> scores, added to the summary and written
      as `eval/<name>` scalars; None: no evaluation.
    summary: the run's own entries of the summary.
    show, scalars, progress_fn: as in `run`.

  Returns:
    The summary: steps, wall time of this call, the step resumed from, the
    run's entries and the scores.
  """
  state, frozen, start, writer = resume(
      checkpointer, section.num_steps, init_state, field, workdir, name,
      frozen)
  state, done = run(
      lambda s: chunk(s, frozen), state, num_steps=section.num_steps,
      log_every=section.log_every, start=start, desc=name, writer=writer,
      checkpointer=checkpointer, show=show, scalars=scalars,
      progress_fn=progress_fn)
  result = {'num_steps': int(done.step),
            'train_seconds_this_run': done.seconds,
            'resumed_from': int(start), **(summary or {})}
  if evaluate is not None:
    scores = evaluate(state.params, frozen)
    result.update(scores)
    writer.write_scalars(done.step,
                         {f'eval/{k}': v for k, v in scores.items()})
  writer.write_summary(result)
  writer.close()
  checkpointer.close()
  return result
