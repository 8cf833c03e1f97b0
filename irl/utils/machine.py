"""What a benchmark ran on, recorded beside its numbers."""

from __future__ import annotations

import datetime
import os
import platform
from typing import Any

import jax


def machine_info(**extra: Any) -> dict[str, Any]:
  """CPU model and count, JAX version/backend/devices, date, load average."""
  model = platform.processor() or 'unknown'
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          model = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  info = dict(
      cpu_model=model, cpu_count=os.cpu_count(),
      jax_version=jax.__version__, backend=jax.default_backend(),
      devices=[str(d) for d in jax.devices()],
      python=platform.python_version(), platform=platform.platform(),
      date=datetime.datetime.now().isoformat(timespec='seconds'), **extra)
  if hasattr(os, 'getloadavg'):
    info['loadavg_start'] = os.getloadavg()
  return info
