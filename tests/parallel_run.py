"""A few steps of pretraining, the metacontroller and internal RL on the
`test` preset, for tests/test_parallel.py: run in-process on this process's
one device, and in a subprocess on 8 emulated CPU devices.

  python tests/parallel_run.py WORKDIR OUT.npz

The subprocess starts when pytest has collected test_parallel.py
(tests/conftest.py, tests/background.py), so it overlaps the rest of the
suite.

The same run as a multi-host job on one machine (too slow for the suite,
a check of `--distributed` without a cluster): PROCESSES local processes,
each with DEVICES emulated CPU devices, joined by
`jax.distributed.initialize` over gloo; process i writes OUT.i.npz.

  python tests/parallel_run.py --processes=2 --devices=2 WORKDIR OUT.npz
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np

import background
from configs import gridworld
from irl.data import stream
from irl.rl import methods
from irl.rl import train as rl_train
from irl.train import loop
from irl.train import metacontroller as mct
from irl.train import pretrain
from irl.utils import metrics as metrics_lib
from irl.utils import parallel

DEVICES = 8
REPO = background.REPO


def config():
  # The `test` preset's phases, shorter: run lengths and checkpoint cadence
  # are not part of a trainer's cache key, so the one-device run shares
  # the suite's compilations.
  c = gridworld.get_config('test')
  c.pretrain.num_steps = 10
  c.pretrain.save_every = 5
  c.rl.num_updates = 2
  # No episode of so short a run succeeds, and with every advantage 0 the
  # entropy bonus is what gives the policy a gradient to compare.
  c.rl.entropy_coef = 0.01
  return c


def _record(results: dict, name: str, params, jsonl: str) -> None:
  for i, leaf in enumerate(jax.tree.leaves(params)):
    results[f'{name}/param_{i}'] = np.asarray(leaf)
  # The training records (an evaluation adds one of its own at the end).
  records = [r for r in metrics_lib.read_jsonl(jsonl)
             if not any(k.startswith('eval/') for k in r)]
  for key in records[0]:
    if key != 'wall_time' and not key.endswith('_per_sec'):
      results[f'{name}/metric_{key}'] = np.asarray(
          [r[key] for r in records], np.float64)


def run_phases(workdir: str, evaluate: bool = False
               ) -> dict[str, np.ndarray]:
  """Pretraining, the metacontroller and internal RL in `workdir`; their
  final parameters and logged metrics by name, `layout` (the devices of a
  batch and of θ, and whether each is replicated) and, with `evaluate`,
  the two evaluations' scores (`eval/<phase>/<score>`)."""
  c = config()
  results = {'devices': np.int32(parallel.num_devices())}
  metrics = os.path.join(workdir, 'metrics')
  summaries = {'pretrain': pretrain.train(c, workdir, run_eval=evaluate)}
  theta = pretrain.load_params(c, workdir)
  _record(results, 'pretrain', theta, os.path.join(metrics, 'pretrain.jsonl'))
  # Where the work ran: a batch split over every device, θ on each of them.
  batch = stream.stream_from_config(c)(jax.random.key(0)).obs
  state = jax.tree.leaves(theta)[0]
  results['layout'] = np.asarray([
      len(batch.sharding.device_set), batch.sharding.is_fully_replicated,
      len(state.sharding.device_set), state.sharding.is_fully_replicated])
  summaries['metacontroller'] = mct.train(c, workdir, run_eval=evaluate)
  _record(results, 'metacontroller', mct.load_params(c, workdir)[0],
          os.path.join(metrics, mct.run_name(c) + '.jsonl'))
  rl_train.train(c, workdir, 'internal')
  rc = methods.method_config(c, 'internal')
  name = methods.run_name(rc)
  learner = rl_train.make_learner(rc)
  init = jax.vmap(learner.init, in_axes=(0, None))(
      jax.numpy.stack([jax.random.key(s) for s in rc.rl.seeds]), None)
  with loop.checkpointer(workdir, name, rc.rl, rl_train.fingerprint(rc),
                         rl_train.ADDED_FIELDS) as ckpt:
    states = ckpt.restore_at(rc.rl.num_updates, init)
  _record(results, 'rl', states.params, os.path.join(metrics, name + '.jsonl'))
  for phase, summary in summaries.items():
    for key, value in summary.items():
      if evaluate and isinstance(value, (int, float)) and key.startswith(
          ('heldout/', 'closed_loop/')):
        results[f'eval/{phase}/{key}'] = np.float64(value)
  return results


def eight_device_run() -> background.Run:
  """The session's one 8-device run of `run_phases`, started on first use:
  its results go to `<dir>/out.npz`."""
  return background.start(
      '8dev', lambda run: [os.path.abspath(__file__), run.workdir,
                           os.path.join(run.dir, 'out.npz')],
      env={'XLA_FLAGS': (os.environ.get('XLA_FLAGS', '') + ' --xla_force_'
                         f'host_platform_device_count={DEVICES}').strip()})


def eight_device_result() -> tuple[str, dict[str, np.ndarray]]:
  """The 8-device run's workdir and results, once it has finished."""
  run = eight_device_run()
  run.wait(900)
  with np.load(os.path.join(run.dir, 'out.npz')) as data:
    return run.workdir, dict(data)


def multihost(processes: int, devices: int, workdir: str, out: str) -> None:
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO,
             JAX_COORDINATOR_ADDRESS='localhost:12355',
             JAX_NUM_PROCESSES=str(processes),
             JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__),
                             '--process', workdir,
                             out.removesuffix('.npz') + f'.{i}.npz'],
                            env=dict(env, JAX_PROCESS_ID=str(i)), cwd=REPO)
           for i in range(processes)]
  if any(p.wait() for p in procs):
    raise SystemExit('a process failed')


if __name__ == '__main__':
  flags = dict(a[2:].partition('=')[::2] for a in sys.argv[1:]
               if a.startswith('--'))
  workdir, out = [a for a in sys.argv[1:] if not a.startswith('--')]
  if 'processes' in flags:
    multihost(int(flags['processes']), int(flags.get('devices', 2)), workdir,
              out)
  else:
    if 'process' in flags:   # one process of `multihost`
      parallel.initialize()
    np.savez(out, **run_phases(workdir, evaluate='process' in flags))
