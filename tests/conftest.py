"""Starts the 8-device run of test_parallel.py as soon as pytest has
collected it, so that its subprocess overlaps the rest of the suite."""

import parallel_run


def pytest_collection_finish(session):
  if any(item.path.name == 'test_parallel.py' for item in session.items):
    parallel_run.eight_device_run()
