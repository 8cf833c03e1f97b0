"""Progress reporting for long training loops: a tqdm bar on a terminal, log lines otherwise.

`Progress.update` is cheap on every call: it only stores the step and a
reference to the metrics. Metrics are pulled to the host (which waits for the
device) only when a line is actually shown, every `refresh_secs` on a terminal
and every `log_every_secs` in a log file, so calling it each step does not
serialise jax's async dispatch.
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from absl import logging
import jax
import numpy as np
import tqdm

from irl.utils import closing


def format_metrics(metrics: Mapping[str, Any]) -> str:
  """`loss=0.1234 acc=0.5`; non-scalar values are shown by shape only."""
  parts = []
  keys = list(metrics)
  # device_get of a list, not a dict: dict pytrees come back with sorted keys.
  for k, v in zip(keys, jax.device_get([metrics[k] for k in keys])):
    arr = np.asarray(v)
    if arr.size != 1:
      parts.append(f'{k}=<{arr.shape}>')
      continue
    x = arr.reshape(()).item()
    parts.append(f'{k}={x:.4g}' if isinstance(x, float) else f'{k}={x}')
  return ' '.join(parts)


class Progress(closing.Closing):
  """Shows progress of a loop over steps `start..total` with its latest metrics.

  Args:
    total: the last step.
    start: the first step (the resumed step when restarting from a checkpoint).
    desc: a label for the bar or log line.
    use_bar: force the tqdm bar on/off; by default on iff stderr is a TTY.
    refresh_secs: minimum interval between bar refreshes.
    log_every_secs: interval between log lines when there is no bar.
    file: stream for the bar (default stderr).

  Usable as a brax-style `progress_fn(step, metrics)` callback, and as a
  context manager.
  """

  def __init__(
      self,
      total: int,
      start: int = 0,
      desc: str = '',
      *,
      use_bar: bool | None = None,
      refresh_secs: float = 0.5,
      log_every_secs: float = 60.0,
      file: TextIO | None = None,
  ):
    self.total = int(total)
    self.start = int(start)
    self.desc = desc
    stream = file if file is not None else sys.stderr
    if use_bar is None:
      use_bar = bool(getattr(stream, 'isatty', lambda: False)())
    self._interval = refresh_secs if use_bar else log_every_secs
    self._bar = (
        tqdm.tqdm(
            total=self.total, initial=self.start, desc=desc or None, unit='step',
            dynamic_ncols=True, file=stream, leave=True,
        )
        if use_bar
        else None
    )
    self._step = self.start
    self._metrics: Mapping[str, Any] = {}
    self._t0 = time.monotonic()
    self._last_time = -math.inf  # the first update is shown at once (after compilation)
    self._last_step = self.start
    self._shown_step: int | None = None
    self._closed = False

  def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> None:
    """Records that `step` is done; shows it if the refresh interval has passed."""
    self._step = int(step)
    if metrics is not None:
      self._metrics = metrics
    now = time.monotonic()
    if now - self._last_time >= self._interval:
      self._show(now)

  __call__ = update

  def _show(self, now: float) -> None:
    text = format_metrics(self._metrics) if self._metrics else ''
    if self._bar is not None:
      self._bar.set_postfix_str(text, refresh=False)
      self._bar.update(self._step - self._bar.n)  # refreshes the bar
    else:
      elapsed = now - (self._t0 if math.isinf(self._last_time) else self._last_time)
      rate = (self._step - self._last_step) / elapsed if elapsed > 0 else float('nan')
      left = self.total - self._step
      eta = str(datetime.timedelta(seconds=round(left / rate))) if rate > 0 else '?'
      pct = 100.0 * self._step / self.total if self.total else 100.0
      logging.info(
          '%sstep %d/%d (%.1f%%) %.2f steps/s ETA %s%s',
          f'{self.desc}: ' if self.desc else '', self._step, self.total, pct, rate, eta,
          f' | {text}' if text else '',
      )
    self._last_time = now
    self._last_step = self._step
    self._shown_step = self._step

  def close(self) -> None:
    """Shows the final step and metrics and closes the bar."""
    if self._closed:
      return
    self._closed = True
    if self._shown_step != self._step:
      self._show(time.monotonic())
    if self._bar is not None:
      self._bar.close()
