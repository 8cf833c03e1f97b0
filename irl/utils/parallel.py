"""Data parallelism over every device of every process (`jax.sharding`).

One mesh with one axis, `data`, over all devices the run sees. A batch
(episodes, environments, RL seeds × episodes) is split along its leading
axis; parameters, optimiser states and PRNG keys are replicated. The jitted
steps stay single-program code: `shard_batch` marks where a batch is made
(the expert streams, the RL rollouts) and XLA partitions the rest and
all-reduces the gradients. One device is a mesh of one, so there is no
second code path.

At this project's sizes (≤ 5M parameters, a few MB of optimiser state)
replicating the parameters costs nothing; a fully sharded layout (FSDP:
parameters and optimiser state split over `data` too) starts to pay only
when they no longer fit a device comfortably beside the activations, about
a thousand times larger (docs/scaling.md).

Multi-host: `initialize()` (the entry points' `--distributed` flag) joins
the processes; every process then sees every device in `mesh()`, generates
the shard of each batch that lives on its own devices (the batch is one
global array drawn from one key, so no two hosts draw the same episodes),
and only process 0 writes metrics, figures and reports (`is_writer`).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = 'data'


@functools.cache
def mesh() -> Mesh:
  """The one-axis mesh over every device of every process."""
  return Mesh(np.asarray(jax.devices()), (AXIS,))


def num_devices() -> int:
  return mesh().size


def replicated() -> NamedSharding:
  return NamedSharding(mesh(), PartitionSpec())


def shard_batch(tree: Any, axis: int = 0) -> Any:
  """Inside a jitted function: split axis `axis` (the batch) of every array
  of `tree` over the devices."""
  n = num_devices()
  sharding = NamedSharding(mesh(), PartitionSpec(*[None] * axis, AXIS))

  def one(x):
    if x.shape[axis] % n:
      raise ValueError(f'a batch of {x.shape[axis]} does not split over the '
                       f'{n} devices; use a multiple of {n}')
    return jax.lax.with_sharding_constraint(x, sharding)

  return jax.tree.map(one, tree)


def replicate(tree: Any) -> Any:
  """`tree` (host or device arrays, equal on every process) as arrays
  replicated over the mesh: the state a jitted step takes."""
  if jax.process_count() == 1:
    return jax.device_put(tree, replicated())

  def one(x):
    if isinstance(x, jax.Array) and x.is_fully_replicated and (
        x.sharding == replicated()):
      return x
    if jax.dtypes.issubdtype(getattr(x, 'dtype', None), jax.dtypes.prng_key):
      data = np.asarray(jax.random.key_data(x))
      impl = jax.random.key_impl(x)
      arr = jax.make_array_from_callback(data.shape, replicated(),
                                         lambda i: data[i])
      return jax.random.wrap_key_data(arr, impl=impl)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, replicated(),
                                        lambda i: host[i])

  return jax.tree.map(one, tree)


def to_host(tree: Any) -> Any:
  """The values of `tree`'s arrays as numpy arrays on every process; a batch
  split over the devices of several hosts is gathered first."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def barrier(name: str) -> None:
  """Waits until every process reaches `name` (no-op on one process), e.g.
  before reading a file that process 0 writes."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


# The index `is_writer` reads (a test fakes another process through it).
process_index = jax.process_index


def is_writer() -> bool:
  """Whether this process writes metrics, figures and reports (process 0);
  the others train alongside it and write checkpoints through orbax only."""
  return process_index() == 0


def initialize() -> None:
  """Joins a multi-process run before anything touches a device.

  `jax.distributed.initialize` finds the coordinator, the number of
  processes and this process's id on SLURM, Open MPI, Kubernetes and Cloud
  TPU; elsewhere set JAX_COORDINATOR_ADDRESS (host:port of process 0),
  JAX_NUM_PROCESSES and JAX_PROCESS_ID on every host (docs/scaling.md).
  """
  num, pid = (os.environ.get(k) for k in ('JAX_NUM_PROCESSES',
                                           'JAX_PROCESS_ID'))
  jax.distributed.initialize(num_processes=int(num) if num else None,
                             process_id=int(pid) if pid else None)
