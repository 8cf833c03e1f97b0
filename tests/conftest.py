"""Suite-wide settings.

XLA's CPU backend compiles with LLVM at -O0, without its expensive
passes and with its elemental emitters in place of the fusion emitters:
the suite's functions run a few steps on tiny shapes, so compiling them is
most of its time. The first two flags, and then the third, each cut a
compile-bound test by about 30% (docs/design.md, "Tests"). The flags
reach the suite's subprocesses through the environment; a user's own
XLA_FLAGS are kept, after these.

Two long runs start in subprocesses once pytest has collected the tests,
where a test that needs one was collected, so that they overlap the rest of
the suite (tests/background.py): the 8-device run of test_parallel.py and
the ant pipeline of test_arena.py. test_parallel.py and the ant pipeline's
test run last.
"""

import os

_FAST_COMPILE = ('--xla_backend_optimization_level=0 '
                 '--xla_llvm_disable_expensive_passes=true '
                 '--xla_cpu_use_fusion_emitters=false')
os.environ['XLA_FLAGS'] = (
    _FAST_COMPILE + ' ' + os.environ.get('XLA_FLAGS', '')).strip()

# pylint: disable=g-import-not-at-top,wrong-import-position
import background
import parallel_run

# The background run each test waits for, by the test's module or name.
_BACKGROUND = {
    'test_parallel.py': parallel_run.eight_device_run,
    'test_the_test_preset_ant_pipeline_runs_end_to_end':
        background.ant_pipeline,
}


def _background(item):
  return (_BACKGROUND.get(item.path.name)
          or _BACKGROUND.get(getattr(item, 'originalname', None)))


def pytest_collection_modifyitems(session, config, items):
  # The tests of a run go last (a stable sort keeps the order of the rest),
  # so that the runs overlap as much of the suite as they can.
  items.sort(key=lambda item: _background(item) is not None)


def pytest_collection_finish(session):
  if session.config.option.collectonly or session.testsfailed:
    return                  # nothing will run, or a collection error stops it
  for start in {_background(item) for item in session.items} - {None}:
    start()
