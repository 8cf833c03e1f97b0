"""The one job loop every phase runs through.

A phase supplies a pure, jitted `chunk(state) -> (state, metrics)` that runs
`log_every` training steps (a `lax.scan`), and the loop does the rest, the
same way for pretraining, probes, ground-truth controllers, the
metacontroller and its variants, the rate-distortion groups, CompILE and
internal RL: metrics to the host, the step rate, TensorBoard + JSONL
(`MetricsWriter`), the progress line, checkpoints at their cadence (always
at the end), and a brax-style `progress_fn(step, metrics)` hook for callers
that want the numbers as they come (a notebook, a sweep driver).

`resume` starts or resumes a job (restore up to the run length, move to the
device, open the metrics writer at the restored step); `load_finished`
restores a finished run for the phases that build on it, or says what to run.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
from absl import logging

from irl.utils import checkpoint as ckpt_lib
from irl.utils import metrics as metrics_lib
from irl.utils import progress as progress_lib

# (step, host metrics) -> None, called after every chunk.
ProgressFn = Callable[[int, dict], None]


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
