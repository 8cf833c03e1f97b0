"""Scalar metrics to TensorBoard and JSON lines, safe across kill-and-resume.

Layout under a workdir:
  tb/<name>/events.out.tfevents.*   TensorBoard (tensorboardX)
  metrics/<name>.jsonl              one {"step", "wall_time", **scalars} per call
  metrics/<name>_summary.json       final summary of the job

JSONL is the source of truth for figures and tests (no TensorBoard reader
needed); TensorBoard is for watching a run.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

from absl import logging
import jax
import numpy as np
import tensorboardX

from irl.utils import closing
from irl.utils import parallel
from irl.utils.config_utils import atomic_write_text, write_json


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """Reads a JSON-lines file; a truncated last line (run killed mid-write) is skipped.

  Raises:
    ValueError: a line other than the last is not valid JSON.
  """
  with open(path) as f:
    lines = f.read().split('\n')
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if any(l.strip() for l in lines[i + 1:]):
        raise ValueError(f'{path}:{i + 1}: invalid JSON line: {e}') from e
      logging.warning('%s: skipping truncated last line %d.', path, i + 1)
  return records


def _to_scalar(key: str, value: Any) -> float | int | bool:
  arr = np.asarray(value)
  if arr.size != 1:
    raise ValueError(f'metric {key!r} must be a scalar, got shape {arr.shape}')
  item = arr.reshape(()).item()
  if not isinstance(item, (bool, int, float)):
    raise ValueError(f'metric {key!r} must be a real number, got {value!r}')
  return item


class MetricsWriter(closing.Closing):
  """Writes scalars to `<workdir>/tb/<name>` and `<workdir>/metrics/<name>.jsonl`.

  Args:
    workdir: the job's --workdir.
    name: the job name ('pretrain', 'probe', ...).
    resume_step: the step the run restarts from (the `start_step` returned by
      `Checkpointer.restore_or_init`, 0 for a fresh run). JSONL records with
      step > resume_step were written after the last checkpoint by a killed
      run and are dropped, so the rerun leaves no duplicate steps; TensorBoard
      is told to purge them the same way. None appends without dropping
      anything (for writers that do not resume, e.g. a one-off evaluation).
  """

  def __init__(self, workdir: str | os.PathLike[str], name: str, resume_step: int | None = None):
    workdir = os.fspath(workdir)
    self.name = name
    self.tb_dir = os.path.join(workdir, 'tb', name)
    metrics_dir = os.path.join(workdir, 'metrics')
    self.jsonl_path = os.path.join(metrics_dir, f'{name}.jsonl')
    self.summary_path = os.path.join(metrics_dir, f'{name}_summary.json')
    # One writer per run: process 0's (the others train the same steps).
    self._closed = not parallel.is_writer()
    if self._closed:
      return
    os.makedirs(metrics_dir, exist_ok=True)
    if resume_step is not None and os.path.exists(self.jsonl_path):
      self._truncate_after(int(resume_step))
    self._jsonl = open(self.jsonl_path, 'a')
    # tensorboardX names event files by the second and opens them with 'wb':
    # a quick restart would overwrite the killed run's file without a suffix.
    self._tb = tensorboardX.SummaryWriter(
        self.tb_dir,
        purge_step=None if resume_step is None else int(resume_step) + 1,
        filename_suffix=f'.{os.getpid()}.{uuid.uuid4().hex[:8]}',
        flush_secs=30,
    )
    self._closed = False

  def _truncate_after(self, resume_step: int) -> None:
    records = read_jsonl(self.jsonl_path)
    kept = [r for r in records if int(r['step']) <= resume_step]
    if len(kept) == len(records):
      return
    logging.info(
        'Dropping %d records with step > %d from %s (written after the last checkpoint).',
        len(records) - len(kept), resume_step, self.jsonl_path,
    )
    atomic_write_text(self.jsonl_path, ''.join(json.dumps(r) + '\n' for r in kept))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes one record; values may be Python, numpy or jax scalars (one device_get)."""
    if self._closed:
      return
    keys = list(scalars)
    # device_get of a list, not a dict: dict pytrees come back with sorted keys.
    host = jax.device_get([scalars[k] for k in keys])
    values = {str(k): _to_scalar(k, v) for k, v in zip(keys, host)}
    step = int(step)
    wall_time = time.time()
    record = {'step': step, 'wall_time': wall_time, **values}
    # NaN/inf are written as JSON's NaN/Infinity extension: a diverging loss
    # must be on record, and Python's json reads it back.
    self._jsonl.write(json.dumps(record) + '\n')
    # Flush per call (to the OS, not fsync): a killed run loses at most the
    # record being written, and read_jsonl tolerates that truncated line.
    self._jsonl.flush()
    for k, v in values.items():
      self._tb.add_scalar(k, float(v), global_step=step, walltime=wall_time)

  def write_summary(self, summary: Mapping[str, Any]) -> str:
    """Writes `<workdir>/metrics/<name>_summary.json` (atomically); returns its path."""
    write_json(self.summary_path, jax.device_get(dict(summary)))
    return self.summary_path

  def flush(self) -> None:
    if self._closed:
      return
    self._jsonl.flush()
    self._tb.flush()

  def close(self) -> None:
    if self._closed:
      return
    self._closed = True
    self._jsonl.close()
    self._tb.close()
