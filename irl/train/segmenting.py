"""What the two segmenting runs (the metacontroller and CompILE) share: their
`Trainer` type, what their checkpoints
mean, the key of their cached trainers, their D* samplers, the held-out
evaluation (the same episodes for every run, collected and written the same
way) and the job that trains, evaluates and writes them. The scores
themselves are in irl/train/segmentation.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from irl import config as config_lib
from irl import optim
from irl.config import Config
from irl.data import stream
from irl.envs import registry
from irl.train import loop
from irl.train import pretrain
from irl.train import segmentation
from irl.utils import checkpoint as ckpt_lib
from irl.utils import config_utils
from irl.utils import parallel
from irl.utils.config_utils import Section


class Trainer(NamedTuple):
  """The pure functions of a run that segments behaviour: the metacontroller
  (`irl.train.metacontroller.make_trainer`) or CompILE
  (`irl.train.compile.make_trainer`).

  Attributes:
    base_model, model: the flax modules (`model` is the metacontroller or
      CompILE), for callers that need their configs.
    init: (key, base params, weights...) -> the run's TrainState.
    chunk: (state, frozen θ or None) -> (state, mean metrics) over
      `log_every` steps; `train_chunk` is its jit.
    loss: (params, θ, batch, ...) -> (loss, metrics).
    evaluate_batch: (params, θ, key) -> one held-out batch's arrays;
      `evaluate_jit` is its jit.
  """
  base_model: Any
  model: Any
  init: Callable[..., Any]
  chunk: Callable[..., tuple[Any, dict]]
  train_chunk: Callable[..., tuple[Any, dict]]
  loss: Callable[..., tuple[Any, dict]]
  evaluate_batch: Callable[..., dict]
  evaluate_jit: Callable[..., dict]


# A section's fields that change neither what a run computes per step nor its
# compilation; with the run length and the loss weights (leaves of the
# state), factories leave them out so the compiled step is shared.
_PER_RUN_FIELDS = ('save_every', 'keep_checkpoints', 'seed',
                   'trace_episodes', 'eval_episodes')


def control_layer(config: Config, section: str) -> int:
  """The residual layer a run reads and edits: `<section>.layer` (the
  config's -1, L // 2, is resolved by `irl.config.build`)."""
  return config_lib.build(config)[section].layer


def fingerprint(config: Config, section: str,
                fields: Sequence[str], from_pretrained: bool = True) -> dict:
  """What a run's checkpoints mean: the environment, the model, `fields` of
  `section` and, for a run on a pretrained θ, the pretraining run."""
  config = config_lib.build(config)
  keys = ['env', 'model'] + [f'{section}.{f}' for f in fields]
  keys += (list(pretrain.FINGERPRINT_KEYS) + ['pretrain.num_steps']
           if from_pretrained else ['seed']) + list(pretrain.data_keys(config))
  return config_utils.config_fingerprint(
      config, sorted(set(keys)), exclude=pretrain.TASK_FREE_FIELDS)


def factory_key(config: Config, section: str, zero: Sequence[str]) -> Config:
  """The key of a segmenting run's cached trainer: the sections it reads
  (the environment, the model and `section`), with `section`'s per-run
  fields and the fields in `zero` (its loss weights, leaves of the state,
  and fields the trainer does not read) zeroed."""
  fields = [f'{section}.{f}' for f in _PER_RUN_FIELDS + tuple(zero)]
  return config_lib.factory_key(
      config, sections=('env', 'model', section),
      zero=fields + optim.run_length(config[section], section))


def expert_streams(config: Config,
                   s: Section
                   ) -> tuple[Callable[[jax.Array], Any], ...]:
  """(training, held-out) samplers of D* (ε = 0 expert episodes) at section
  `s`'s batch sizes and sequence length; key -> Rollout [B, T]."""
  env = registry.from_config(config)
  env_params = config_lib.env_params(config)
  return tuple(stream.make_expert_stream(env, env_params, b, s.seq_len,
                                         (0.0,), jit=False)
               for b in (s.batch_size, s.eval_batch_size))


# --------------------------------------------------------------------------
# The held-out evaluation.


def eval_key() -> jax.Array:
  """The key of the held-out episodes every segmenting run is scored on."""
  # Held out: no training step draws its data from this key (training keys
  # are split from each run's own seed); one set for every run, so runs are
  # scored on the same episodes.
  return jax.random.fold_in(jax.random.key(0), 0x5E6)


def collect_eval(batch_fn, num_episodes: int, batch_size: int,
                 key: jax.Array | None = None) -> dict[str, np.ndarray]:
  """Runs a jitted `batch_fn(key)` over the held-out batches (default key:
  `eval_key()`) and concatenates the host arrays along the episode axis
  (B of `valid` [.., B, T]; per-step vectors such as codes are
  [.., B, T, n]; a leading axis of vmapped runs is kept)."""
  num_batches = -(-num_episodes // batch_size)
  keys = jax.random.split(eval_key() if key is None else key, num_batches)
  parts = [parallel.to_host(batch_fn(k)) for k in keys]
  axis = parts[0]['valid'].ndim - 2
  return {n: np.concatenate([p[n] for p in parts], axis=axis)
          for n in parts[0]}


def evaluate(trainer: Trainer, section: Section,
             summarise: Callable[[dict], dict[str, float]], params: Any,
             base_params: Any, out_dir: str | None = None
             ) -> dict[str, float]:
  """Held-out scores of one run (`summarise` of its evaluation arrays, at
  `section`'s evaluation size); with `out_dir`, also writes them and the
  first `section.trace_episodes` episodes' β traces (`write_eval`).

  params: `TrainState.params`; base_params: the frozen θ (None if co-trained).
  """
  arrays = collect_eval(
      lambda k: trainer.evaluate_jit(params, base_params, k),
      section.eval_episodes, section.eval_batch_size)
  summary = summarise(arrays)
  if out_dir is not None:
    write_eval(out_dir, arrays, summary, section.trace_episodes)
  return summary


def train_job(config: Config, section: str, name: str,
              workdir: str, trainer: Trainer,
              checkpointer: ckpt_lib.Checkpointer, init_state: Any,
              frozen: Any, summarise: Callable[[dict], dict[str, float]],
              summary: dict, show: Sequence[str], run_eval: bool = True,
              progress_fn: loop.ProgressFn | None = None) -> dict:
  """`loop.train_job` for a segmenting run: its config, β traces and
  held-out scores (`evaluate` with `summarise`, in the summary as
  `heldout/<score>`) go to `<workdir>/<name>/`."""
  out_dir = os.path.join(workdir, name)
  os.makedirs(out_dir, exist_ok=True)
  config_utils.save_config(config, out_dir)
  heldout = lambda params, theta: {
      f'heldout/{k}': v for k, v in evaluate(
          trainer, config[section], summarise, params, theta, out_dir).items()}
  return loop.train_job(
      trainer.train_chunk, checkpointer, init_state, section=config[section],
      field=f'{section}.num_steps', name=name, workdir=workdir,
      frozen=frozen, evaluate=heldout if run_eval else None,
      summary=summary, show=show, progress_fn=progress_fn)


def write_eval(out_dir: str, arrays: dict, summary: dict,
               trace_episodes: int) -> None:
  """`segmentation.SUMMARY` (the scores) and the first `trace_episodes`
  episodes' β traces (`segmentation.EVAL_ARRAYS`, drawn by
  `irl.analysis.reports`) in `out_dir`."""
  segmentation.save_eval_arrays(out_dir, arrays, trace_episodes)
  config_utils.write_json(os.path.join(out_dir, segmentation.SUMMARY), summary)
