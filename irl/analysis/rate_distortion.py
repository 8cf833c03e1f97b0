"""The rate-distortion sweep of Fig. 7: α × seeds per base-model mode.

`run(config, workdir)` trains every (mode, α, seed) of `config.rate_distortion`
through `train_group` (the runs of a group share one
`jax.vmap` and one resumable checkpoint), skips the groups whose results are
on record, and writes `<workdir>/rate_distortion/results.{json,csv}` and
`rate_distortion.png` (action NLL against KL; filled markers where the
held-out F1 reaches `rate_distortion.f1_threshold`).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
from absl import logging

from irl import config as config_lib
from irl.analysis import figures
from irl.config import Config, checks
from irl.train import loop
from irl.train import metacontroller as mct
from irl.train import pretrain
from irl.utils import checkpoint as ckpt_lib
from irl.utils import config_utils
from irl.utils import metrics as metrics_lib

RESULT_FIELDS = (
    'base_model', 'kl_weight', 'seed', 'num_steps', 'action_nll', 'kl',
    'kl_per_episode', 'action_nll_posterior_mean', 'action_nll_no_control',
    'f1', 'precision', 'recall', 'median_switches_per_episode',
    'median_boundaries_per_episode', 'median_count_error',
    'beta_binary_fraction', 'code_subgoal_acc', 'code_subgoal_chance',
    'tied_fraction', 'ceiling_nll_tied', 'action_nll_tied',
    'action_nll_untied', 'aligned')


def _groups(runs: list[tuple[float, int]], size: int
            ) -> list[list[tuple[float, int]]]:
  size = size or len(runs)
  return [runs[i:i + size] for i in range(0, len(runs), size)]


def _write_results(out_dir: str, records: list[dict], f1_threshold: float
                   ) -> None:
  if not records:   # nothing current: take down what an earlier run wrote
    for name in ('results.json', 'results.csv', 'rate_distortion.png'):
      pathlib.Path(out_dir, name).unlink(missing_ok=True)
    return
  records = sorted(records, key=lambda r: (r['base_model'], r['kl_weight'],
                                           r['seed']))
  for r in records:
    r['aligned'] = bool(r['f1'] >= f1_threshold)
  config_utils.write_json(os.path.join(out_dir, 'results.json'), records)
  table = io.StringIO(newline='')
  w = csv.DictWriter(table, fieldnames=RESULT_FIELDS, extrasaction='ignore')
  w.writeheader()
  w.writerows(records)
  config_utils.atomic_write_text(os.path.join(out_dir, 'results.csv'),
                                 table.getvalue())
  figures.rate_distortion_figure(
      os.path.join(out_dir, 'rate_distortion.png'), records, f1_threshold)


# --------------------------------------------------------------------------
# The runs of one group, trained together.


def result_digest(config: Config) -> str:
  """What a stored result of the sweep was computed under: the
  metacontroller's checkpoint fingerprint (less the α and seed each run sets
  for itself) and the evaluation's fields. A record whose digest differs is
  stale: it is neither served nor written out again."""
  m = config.metacontroller
  fp = mct.fingerprint(config)
  for field in ('kl_weight', 'seed'):
    fp['metacontroller'].pop(field, None)
  fp['eval'] = [m.eval_episodes, m.eval_batch_size, m.switch_threshold,
                m.boundary_tolerance]
  return hashlib.sha1(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]


def group_name(mode: str, runs: list[tuple[float, int]], num_steps: int
               ) -> str:
  """The checkpoint name of a group of rate-distortion runs."""
  digest = hashlib.sha1(json.dumps([mode, runs, num_steps]).encode()
                        ).hexdigest()[:10]
  return f'{mode}_{digest}'


def shared_name(mode: str, group: list[tuple[float, int]], num_steps: int
                ) -> str:
  """The checkpoint name of the free start of `group`: a function of the
  mode, the seed set and the run length, not of the rates, so groups that
  sweep other rates of the same seeds share it (under the same recipe: the
  checkpoint's fingerprint refuses another)."""
  seeds = sorted({s for _, s in group})
  return group_name(mode, [(0.0, s) for s in seeds], num_steps) + '_shared'


@functools.lru_cache(maxsize=None)
def _over_runs(fn: Callable, num_args: int) -> Callable:
  """jit(vmap(fn)) over its first argument (the runs), the other
  `num_args − 1` shared; kept per trainer function, so that the groups of
  one trainer share their compilations."""
  return jax.jit(jax.vmap(fn, in_axes=(0,) + (None,) * (num_args - 1)))


def shared_steps(config: Config, group: list[tuple[float, int]],
                 num_steps: int) -> int:
  """How many of the first steps the runs of `group` that share a seed
  compute alike: α is 0 for every run until `metacontroller.kl_delay`, so
  runs that differ only in α are the same run until then. Whole chunks of
  `log_every` only; 0 when no two runs share a seed."""
  m = config.metacontroller
  if len({s for _, s in group}) == len(group):
    return 0
  return min(m.kl_delay, num_steps) // m.log_every * m.log_every


def _train_runs(config: Config, workdir: str, mode: str,
                runs: list[tuple[float, int]], num_steps: int,
                frozen_params: Any, name: str, init: Any,
                fresh_start: Callable[[], tuple[Any, int]] | None = None
                ) -> Any:
  """The stacked state of `runs` (one `jax.vmap`) trained to `num_steps`,
  resumed from `<workdir>/checkpoints/rate_distortion/<name>`; with no
  checkpoint there, from `fresh_start()` (state, step) if given, else from
  `init` at 0. frozen_params: θ on the device (frozen) or None. The
  state's leaves are [len(runs), ...]."""
  m = config.metacontroller
  trainer = mct.make_trainer(config)
  fp = mct.fingerprint(config)
  fp['group'] = {'runs': [list(r) for r in runs]}
  ckpt = ckpt_lib.Checkpointer(
      os.path.join(workdir, 'checkpoints', 'rate_distortion', name),
      save_every=m.save_every, max_to_keep=1, fingerprint=fp,
      added_fields=mct.ADDED_FIELDS)
  state, start = ckpt.restore_or_init(init)
  if start == 0 and fresh_start is not None:
    state, start = fresh_start()
  chunk = _over_runs(trainer.chunk, 2)
  state = ckpt_lib.on_device(state)
  writer = metrics_lib.MetricsWriter(workdir, f'rate_distortion_{name}',
                                     resume_step=start)
  tags = [f'a{a:g}_s{s}' for a, s in runs]

  def scalars(metrics, *_):
    out = {k: float(metrics[k].mean()) for k in ('action_nll', 'kl')}
    for i, tag in enumerate(tags):
      for k in ('action_nll', 'kl', 'switches_per_episode'):
        out[f'{tag}/{k}'] = metrics[k][i]
    return out

  state, _ = loop.run(
      lambda s: chunk(s, frozen_params), state, num_steps=num_steps,
      log_every=m.log_every, start=start,
      desc=f'rate_distortion {mode} ({len(runs)} runs)', writer=writer,
      checkpointer=ckpt, show=('action_nll', 'kl'), scalars=scalars)
  ckpt.close()
  writer.close()
  return state


def train_group(config: Config, workdir: str, mode: str,
                group: list[tuple[float, int]], num_steps: int,
                base_params: Any, share: bool = True) -> list[dict]:
  """Trains the runs (α, seed) of one group together under one `jax.vmap`,
  resuming from `<workdir>/checkpoints/rate_distortion/<group_name>`, and
  returns their held-out records (`mct.summarise_eval` plus the run's mode, α,
  seed and steps). A run uses metacontroller.seed = its seed and kl_weight
  = its α, exactly as a single `train` run would.

  With `share`, the first `shared_steps` (the free start, where every α is
  0) are trained once per seed, and each run continues from its seed's copy
  with its own α: the same runs, up to float32 rounding, in less time
  (measured in docs/design.md). Those steps are kept under `shared_name`,
  so a later call that sweeps other rates of those seeds starts from them
  too."""
  trainer = mct.make_trainer(config)
  name = group_name(mode, group, num_steps)

  def stacked_init(runs):
    # Each run initialised on its own, then stacked: under jax.vmap the
    # metacontroller's init never returns on the CPU from about 7 runs (jax
    # 0.10.2; docs/cpu_scale.md, Fig. 7), while the vmapped training chunk
    # runs.
    return jax.tree.map(lambda *states: jnp.stack(states), *[
        trainer.init(jax.random.key(s), base_params, jnp.float32(a))
        for a, s in runs])

  frozen_params = ckpt_lib.on_device(
      base_params if mode == 'frozen' else None)
  shared = shared_steps(config, group, num_steps) if share else 0

  def from_shared() -> tuple[Any, int]:
    seeds = sorted({s for _, s in group})
    runs = [(0.0, s) for s in seeds]
    state = _train_runs(config, workdir, mode, runs, shared, frozen_params,
                        shared_name(mode, group, num_steps),
                        stacked_init(runs))
    index = jnp.asarray([seeds.index(s) for _, s in group])
    state = jax.tree.map(lambda x: x[index], state)
    # The step restored, not `shared`: a checkpoint of an earlier call with
    # another log_every may lie past it (still inside the free start).
    return state.replace(kl_weight=jnp.asarray(
        [a for a, _ in group], jnp.float32)), int(state.step[0])

  state = _train_runs(config, workdir, mode, group, num_steps, frozen_params,
                      name, stacked_init(group),
                      from_shared if shared else None)
  batch_fn = _over_runs(trainer.evaluate_batch, 3)
  arrays = mct.collect_eval(
      config, lambda k: batch_fn(state.params, frozen_params, k))
  records = []
  for i, (a, s) in enumerate(group):
    summary = mct.summarise_eval(config,
                                 {k: v[i] for k, v in arrays.items()})
    summary.update(base_model=mode, kl_weight=a, seed=s, num_steps=num_steps)
    records.append(summary)
  return records


def _key(record: dict) -> tuple[str, float, int, int]:
  return (record['base_model'], float(record['kl_weight']),
          int(record['seed']), int(record['num_steps']))


def run(config: Config, workdir: str) -> list[dict]:
  """Sweeps α × seeds per base-model mode; writes CSV, JSON and the figure.

  The runs of a group (`rate_distortion.runs_per_group`, default all α ×
  seeds of one mode) train together under one `jax.vmap`; each group has its
  own resumable checkpoint (`<workdir>/checkpoints/rate_distortion/<group>`),
  and a group whose results are on record under the same config
  (`result_digest`) is skipped. Outputs:
  `<workdir>/rate_distortion/results.{json,csv}`, `rate_distortion.png`.
  Run r of a group uses metacontroller.seed = its seed and kl_weight = its α,
  exactly as a single `train` run would; the steps of the free start, the
  same for every α, are trained once per seed (`train_group`).
  """
  config = config_lib.build(config)
  rd = config.rate_distortion
  num_steps = rd.num_steps or config.metacontroller.num_steps
  out_dir = os.path.join(workdir, 'rate_distortion')
  os.makedirs(out_dir, exist_ok=True)
  config_utils.save_config(config, out_dir)
  results_path = os.path.join(out_dir, 'results.json')
  records = []
  if os.path.exists(results_path):
    records = config_utils.read_json(results_path)
  runs = [(float(a), int(s)) for a in rd.kl_weights for s in rd.seeds]
  base_params = None
  modes = set(rd.base_models) | {r.get('base_model') for r in records}
  mode_configs = {
      mode: config_lib.replace(config, {'metacontroller.base_model': mode,
                                        'metacontroller.num_steps': num_steps})
      for mode in modes & set(checks.BASE_MODEL_MODES)}
  digests = {mode: result_digest(c) for mode, c in mode_configs.items()}
  # A record computed under another pretraining run or recipe is not this
  # config's result: it is dropped at once (so no stale figure outlives a
  # failed run), and its run trains again if still swept.
  kept = [r for r in records if r.get('base_model') in digests
          and r.get('config_digest') == digests[r['base_model']]]
  if len(kept) < len(records):
    records = kept
    _write_results(out_dir, records, rd.f1_threshold)
  done = {_key(r) for r in records}
  for mode in rd.base_models:
    cfg, digest = mode_configs[mode], digests[mode]
    for group in _groups(runs, rd.runs_per_group):
      if all((mode, a, s, num_steps) in done for a, s in group):
        logging.info('rate_distortion: %s %s already done', mode, group)
        continue
      if mode != 'cotrain_scratch' and base_params is None:
        base_params = pretrain.load_pretrained(cfg, workdir,
                                               'the rate-distortion sweep')
      new = train_group(cfg, workdir, mode, group, num_steps,
                         None if mode == 'cotrain_scratch' else base_params)
      for r in new:
        r['config_digest'] = digest
      replaced = {_key(r) for r in new}
      records = [r for r in records if _key(r) not in replaced] + new
      _write_results(out_dir, records, rd.f1_threshold)
  _write_results(out_dir, records, rd.f1_threshold)
  return records
