"""Pretraining of the base model on fresh expert data (docs/method.md §4).

`make_pretrainer(config)` returns pure functions: `init(key) -> loop.TrainState` and
`train_chunk(state) -> (state, metrics)`, which runs `pretrain.log_every`
optimiser steps in one `jit` (a `lax.scan`), each on a batch of expert episodes
generated inside the step. All randomness comes from `state.key`, so a run
resumed from a checkpoint replays exactly the data an uninterrupted run would
have seen and ends with the same parameters.

`train(config, workdir)` is the job: checkpoints (resumed automatically),
TensorBoard + JSONL metrics, a progress bar, and a final evaluation.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from irl import config as config_lib
from irl import optim
from irl.config import Config
from irl.data import stream
from irl.envs import registry
from irl.models import BaseModel, ModelConfig
from irl.train import evaluate
from irl.train import loop
from irl.train import losses
from irl.utils import checkpoint as ckpt_lib
from irl.utils import config_utils

# Config fields that define what a pretraining checkpoint means; a checkpoint
# written under different values is refused rather than silently reused.
FINGERPRINT_KEYS = ('seed', 'env', 'model', 'pretrain.learning_rate',
                    'pretrain.weight_decay', 'pretrain.obs_loss_weight',
                    'pretrain.grad_clip', 'pretrain.future_action_weight',
                    'data.epsilons', 'data.seq_len', 'data.episodes_per_row',
                    'pretrain.lr_schedule', 'pretrain.lr_warmup_steps',
                    'pretrain.lr_decay_steps')
# Fields that joined FINGERPRINT_KEYS after checkpoints were written, with the
# value those were trained under: such a checkpoint still loads under a config
# holding that value (every checkpointer that fingerprints these keys passes
# this on; irl/utils/checkpoint.py: fingerprint_diff).
ADDED_FIELDS = {'data.episodes_per_row': 1, 'model.attention_window': 0,
                'model.attention_window_blocks': (),
                **optim.added_fields('pretrain')}
# The post-training task is only evaluated, never trained on, by the phases
# before RL: a checkpoint of pretraining (or of the metacontroller, CompILE)
# serves every novel task (--config.env.post_task=...).
TASK_FREE_FIELDS = ('env.post_task',)


class Pretrainer(NamedTuple):
  model: BaseModel
  init: Callable[[jax.Array], loop.TrainState]
  train_chunk: Callable[[loop.TrainState], tuple[loop.TrainState, dict]]


def model_config(config: Config) -> ModelConfig:
  """The base model of `config.model`, sized for the environment."""
  m = config.model
  env = registry.from_config(config)
  params = config_lib.env_params(config)
  action = env.action_spec(params)
  size = ({'num_actions': action.size} if action.kind == 'discrete'
          else {'action_dim': action.size})
  # The environment gives the action's size (one of the two fields) and,
  # for a grid encoder, the grid's.
  return config_utils.from_section(
      ModelConfig, m, optional=('num_actions', 'action_dim', 'grid_size'),
      obs_dim=env.observation_size(params),
      action_type=action.kind, **size, **env.encoder_fields(params))


def make_pretrainer(config: Config) -> Pretrainer:
  """Pure init/train functions; shared (with their compilations) between
  calls whose configs differ only in run length or checkpoint cadence."""
  config = config_lib.build(config)
  return _make_pretrainer(config_lib.factory_key(
      config, sections=('env', 'data', 'model', 'pretrain'),
      zero=['pretrain.save_every',
            *optim.run_length(config.pretrain, 'pretrain')]))


@functools.lru_cache(maxsize=8)
def _make_pretrainer(config: Config) -> Pretrainer:
  pc = config.pretrain
  model = BaseModel(model_config(config))
  sample = stream.stream_from_config(config, 'pretrain', jit=False,
                                     pack=True)
  packed = config.data.episodes_per_row > 1     # batches are PackedRollouts
  likelihood = registry.from_config(config).obs_likelihood
  tx = optim.section_optimizer(pc, pc.num_steps)

  def init(key: jax.Array) -> loop.TrainState:
    k_params, k_data = jax.random.split(key)
    dummy = jnp.zeros((1, config.data.seq_len, model.config.obs_dim))
    params = model.init(k_params, dummy)
    return loop.TrainState(step=jnp.int32(0), params=params,
                           opt_state=tx.init(params), key=k_data)

  def loss_fn(params, batch):
    out = model.apply(params, batch.obs,
                      segments=batch.segment if packed else None)
    return losses.pretrain_loss(out, batch.actions, batch.next_obs,
                                batch.valid, pc.obs_loss_weight, likelihood,
                                future_weight=pc.future_action_weight)

  def one_step(state: loop.TrainState, _) -> tuple[loop.TrainState, dict]:
    key, k_data = jax.random.split(state.key)
    batch = sample(k_data)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, batch)
    metrics['grad_norm'] = optax.tree.norm(grads)
    metrics['valid_fraction'] = batch.valid.mean()
    metrics['episodes_per_row'] = (batch.episodes.mean().astype(jnp.float32)
                                   if packed else jnp.float32(1.0))
    return state.apply_gradients(tx, grads, key=key), metrics

  @jax.jit
  def train_chunk(state: loop.TrainState) -> tuple[loop.TrainState, dict]:
    return loop.scan_steps(one_step, state, pc.log_every)

  return Pretrainer(model=model, init=init, train_chunk=train_chunk)


def data_keys(config: Config) -> tuple[str, ...]:
  """The config of a trained expert whose episodes are the data (the
  arena's `expert` section): a checkpoint trained on another expert's data
  is refused."""
  return ('expert',) if 'expert' in config else ()


def fingerprint_keys(config: Config) -> tuple[str, ...]:
  """FINGERPRINT_KEYS and `data_keys`, plus the run's length where the
  learning-rate schedule depends on it (step N of a decaying run is not an
  N-step run's model)."""
  keys = FINGERPRINT_KEYS + data_keys(config)
  if optim.run_length_matters(config.pretrain):
    return keys + ('pretrain.num_steps',)
  return keys


def checkpointer(config: Config, workdir: str) -> ckpt_lib.Checkpointer:
  return loop.checkpointer(
      workdir, 'pretrain', config.pretrain, config_utils.config_fingerprint(
          config, fingerprint_keys(config), exclude=TASK_FREE_FIELDS),
      ADDED_FIELDS)


StepNotKeptError = ckpt_lib.StepNotKeptError


def load_params(config: Config, workdir: str) -> Any:
  """Parameters of `workdir`'s pretraining checkpoint of exactly step
  `config.pretrain.num_steps` (a longer run's later steps are never served in
  its place).

  Raises:
    FileNotFoundError: the run has not reached that step.
    StepNotKeptError: it went past it without keeping that checkpoint.
    CheckpointMismatchError: it was written under another config.
  """
  config = config_lib.build(config)
  trainer = make_pretrainer(config)
  return loop.load_finished(
      checkpointer(config, workdir), int(config.pretrain.num_steps),
      lambda: trainer.init(jax.random.key(config.seed)), 'pretrain.num_steps',
      'pretraining run', 'run experiments/pretrain.py with this config and '
      'workdir first').params


def load_pretrained(config: Config, workdir: str,
                    needed_by: str = 'this job') -> Any:
  """θ of `workdir`'s finished pretraining run (`load_params`), for the
  phases that build on it.

  Raises:
    MissingInputError: there is none; the message names `needed_by` and the
      command that makes it.
  """
  directory = os.path.join(workdir, 'checkpoints', 'pretrain')
  # Checked before building a Checkpointer, which would create the folder.
  if not os.path.isdir(directory) or not os.listdir(directory):
    raise ckpt_lib.MissingInputError(
        f'no pretrained base model in {directory}, which {needed_by} reads; '
        'run `python experiments/pretrain.py --config=configs/gridworld.py:'
        f'{config.preset or "<preset>"} --workdir={workdir}` first.')
  return load_params(config, workdir)


def train(config: Config, workdir: str,
          run_eval: bool = True,
          progress_fn: loop.ProgressFn | None = None) -> dict:
  """Pretrains (resuming from `workdir`), evaluates, writes the summary.
  `progress_fn(step, metrics)` sees every logged chunk."""
  config = config_lib.build(config)
  pc = config.pretrain
  trainer = make_pretrainer(config)
  os.makedirs(workdir, exist_ok=True)
  config_utils.save_config(config, workdir)
  tokens = config.data.batch_size * config.data.seq_len * pc.log_every
  return loop.train_job(
      lambda state, _: trainer.train_chunk(state), checkpointer(config, workdir),
      trainer.init(jax.random.key(config.seed)), section=pc,
      field='pretrain.num_steps', name='pretrain', workdir=workdir,
      evaluate=(lambda params, _: evaluate.evaluate_base_model(
          config, trainer.model, params, jax.random.key(config.seed + 1)))
      if run_eval else None,
      show=('loss', 'action_acc', 'steps_per_sec'),
      scalars=lambda m, seconds, _: {**m, 'tokens_per_sec': tokens / seconds},
      progress_fn=progress_fn)
