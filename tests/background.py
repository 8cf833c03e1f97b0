"""Long runs that the suite starts in subprocesses once it has collected
the tests, where a test that needs one was collected (tests/conftest.py).
They run at the lowest priority, on the core the in-process tests leave idle
while they compile, and the test that needs one waits for it: the 8-device
run of test_parallel.py and the `test`-preset ant pipeline of test_arena.py.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Run:
  """`python ARGV(run)` in a subprocess at nice 19, in a temporary folder
  `dir` removed at exit: its workdir is `dir/work`, its output goes to
  `dir/log.txt`."""

  def __init__(self, name: str, argv: Callable[[Run], list[str]],
               env: dict[str, str] | None = None):
    self.name = name
    self.dir = tempfile.mkdtemp(prefix=f'irl_{name}_')
    atexit.register(shutil.rmtree, self.dir, True)
    self.workdir = os.path.join(self.dir, 'work')
    self.log = os.path.join(self.dir, 'log.txt')
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO,
           **(env or {})}
    with open(self.log, 'w') as log:
      self.proc = subprocess.Popen(
          ['nice', '-n', '19', sys.executable, *argv(self)],
          env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    # Registered after the folder's removal, so it runs before it.
    atexit.register(self._stop)

  def _stop(self) -> None:
    self.proc.kill()
    self.proc.wait()

  def wait(self, timeout: float = 1500) -> None:
    """Waits for the run to finish; an error with the log's tail if it
    failed."""
    try:
      rc = self.proc.wait(timeout)
    except subprocess.TimeoutExpired:
      self._stop()
      rc = f'still running after {timeout:g} s, killed'
    if rc:
      with open(self.log) as f:
        raise RuntimeError(f'the {self.name} run failed ({rc}):\n'
                           + f.read()[-4000:])


_RUNS: dict[str, Run] = {}


def start(name: str, argv: Callable[[Run], list[str]],
          env: dict[str, str] | None = None) -> Run:
  """The session's one run of `name`, started on first use."""
  if name not in _RUNS:
    _RUNS[name] = Run(name, argv, env)
  return _RUNS[name]


def ant_pipeline() -> Run:
  """`experiments/reproduce.py` on the ant `test` preset, every phase (the
  expert's included), as a user runs it."""
  return start('ant_pipeline', lambda run: [
      'experiments/reproduce.py', '--config=configs/ant.py:test',
      f'--workdir={run.workdir}'])
