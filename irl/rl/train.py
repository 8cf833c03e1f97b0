"""Internal RL and its baselines: the PureJaxRL-style training loop (docs/method.md §7-8).

`make_learner(config, method)` returns pure functions:
  init(key, source) -> loop.TrainState             one seed (source: θ for
                                                   raw action, else unused)
  update(state, frozen) -> (state, metrics)        rollout -> advantages -> PPO
  train_chunk(states, frozen) -> (states, metrics) jitted: `rl.log_every`
      updates in a `lax.scan`, `vmap`ped over a leading seed axis; metrics
      are [S, log_every] per update.
`frozen` is what the agent does not train: `InternalEnvParams(θ, φ)` for the
internal methods, None for raw-action RL (whose θ is the trained policy).
`train(config, workdir, method)` is the job (checkpoints, metrics, CSV, PNG).

Methods and their configs: `irl.rl.methods`; rollouts: `irl.rl.rollouts`.

Choices where the paper is silent (see also irl/rl/internal_env.py):
- Episodes per update: `rl.batch_size`, all on the post-training task
  (`env.post_task`); a fresh batch per update, 1 epoch of 1 minibatch by
  default (so the first PPO step is at ratio 1: the clipped objective only
  acts with more epochs or minibatches).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from irl import acting
from irl import config as config_lib
from irl import optim
from irl.config import Config, checks
from irl.envs import registry
from irl.models import BaseModel
from irl.models import metacontroller as mc_lib
from irl.rl import internal_env as ienv
from irl.rl import methods
from irl.rl import policy as policy_lib
from irl.rl import ppo
from irl.rl import rollouts
from irl.train import compile as compile_train
from irl.train import loop
from irl.train import losses
from irl.train import metacontroller as mct
from irl.train import pretrain
from irl.utils import checkpoint as ckpt_lib
from irl.utils import config_utils
from irl.utils import metrics as metrics_lib
from irl.utils import parallel

# Checkpoints written before these fields existed trained under these values
# (the fingerprint holds the whole metacontroller or compile section).
ADDED_FIELDS = {**mct.ADDED_FIELDS, **compile_train.ADDED_FIELDS,
                **optim.added_fields('rl'),
                'pretrain.num_steps': ckpt_lib.UNRECORDED}


# --------------------------------------------------------------------------
# The learner.


class Learner(NamedTuple):
  method: str
  env: ienv.InternalEnv | None
  policy: policy_lib.LatentPolicy | None
  model: BaseModel
  init: Callable[[jax.Array, Any], loop.TrainState]
  rollout: Callable[[Any, Any, jax.Array], rollouts.Decisions]
  loss: Callable[..., tuple[jax.Array, dict]]
  update: Callable[[loop.TrainState, Any], tuple[loop.TrainState, dict]]
  train_chunk: Callable[[loop.TrainState, Any], tuple[loop.TrainState, dict]]


def make_learner(config: Config, method: str | None = None,
                 module: ienv.AbstractActionModule | None = None,
                 env: registry.Environment | None = None) -> Learner:
  """Pure functions of internal RL (or a baseline) for `config`.

  `module` is the abstract-action module; None builds it from
  `config.metacontroller` (or `config.compile` for 'compile').
  `env` replaces the environment `config.env.name` selects (tests use a
  fixed layout). Learners are cached by config, module and environment (pass
  the same objects to share compilations).
  """
  config = methods.method_config(config, method)
  if module is None and config.rl.method == 'compile':
    module = compile_module(config)
  key = config_lib.factory_key(
      config, sections=set(config) - {'pretrain', 'eval', 'expert_demo',
                                      'rate_distortion', 'probe', 'control'},
      drop=[f'rl.{name}' for name in ('save_every', 'keep_checkpoints',
                                      'seeds', 'fig8_methods')],
      zero=optim.run_length(config.rl, 'rl', 'num_updates'))
  return _make_learner(key, module, env or registry.from_config(config))


@functools.lru_cache(maxsize=16)
def _make_learner(config: Config,
                  module: ienv.AbstractActionModule | None,
                  env: registry.Environment) -> Learner:
  r = config.rl
  method = r.method
  env_params = config_lib.env_params(config, post=True)
  model_config = pretrain.model_config(config)
  if model_config.backbone == 'transformer':
    # Parameters do not depend on the KV-cache length; an episode needs
    # T + 1 slots (the lower half also reads the last observation).
    model_config = dataclasses.replace(
        model_config, max_len=min(model_config.max_len,
                                  env_params.max_steps + 1))
  model = BaseModel(model_config)
  batch = r.batch_size
  tx = optim.section_optimizer(r, checks.rl_optimiser_steps(r))

  if method == 'raw_action':
    internal = policy = None
    if r.raw_action_params == 'action_head':
      def label(path, _):
        names = [getattr(p, 'key', None) for p in path]
        return 'train' if 'action_head' in names else 'freeze'
      tx = optax.multi_transform(
          {'train': tx, 'freeze': optax.set_to_zero()},
          lambda params: jax.tree_util.tree_map_with_path(label, params))

    def init(key, source):
      del key
      return source   # θ: the pretrained model is the initial policy

    def rollout(params, frozen, key):
      del frozen
      return rollouts.raw_action_rollout(model, env, env_params, batch,
                                r.temperature, params, key)

    def log_prob_fn(params, frozen, inputs, actions):
      del frozen
      out = model.apply(params, inputs)
      logp, entropy = acting.head_log_prob(out, actions, r.temperature)
      return logp, entropy, {}
  else:
    if module is None:
      if method == 'compile':
        raise ValueError("method='compile' needs CompILE's abstract-action "
                         'module (pass module=...).')
      mc = mc_lib.Metacontroller(mct.metacontroller_config(config))
      module = ienv.metacontroller_module(mc)
    internal = ienv.InternalEnv(
        model=model, module=module, env=env, env_params=env_params,
        switch_threshold=float(r.switch_threshold),
        max_decisions=methods.decision_slots(config),
        temperature=float(r.temperature))
    policy = policy_lib.LatentPolicy(
        methods.policy_config(config, module.latent_dim))

    def init(key, source):
      del source
      return policy.init(key, jnp.zeros((1, 1, model.config.width)))

    def rollout(params, frozen, key):
      return rollouts.internal_rollout(internal, policy, batch, params, frozen, key)

    def log_prob_fn(params, frozen, inputs, actions):
      del frozen
      mean, log_std, _ = policy.apply(params, inputs)
      return (policy_lib.gaussian_log_prob(actions, mean, log_std),
              policy_lib.gaussian_entropy(log_std),
              {'log_std': log_std.mean(-1)})

  def loss_fn(params, frozen, mb: rollouts.Decisions, advantage):
    logp, entropy, extra = log_prob_fn(params, frozen, mb.inputs, mb.actions)
    loss, metrics = ppo.ppo_clip_loss(logp, mb.log_prob, advantage, mb.valid,
                                      r.clip_eps, entropy, r.entropy_coef)
    for k, v in extra.items():
      metrics[k] = losses.masked_mean(v, mb.valid)
    return loss, metrics

  def init_state(key: jax.Array, source: Any) -> loop.TrainState:
    """One seed's state; source: θ for raw action (else unused)."""
    k_params, k_run = jax.random.split(key)
    params = init(k_params, source)
    return loop.TrainState(step=jnp.int32(0), params=params,
                           opt_state=tx.init(params), key=k_run)

  def update(state: loop.TrainState, frozen: Any
             ) -> tuple[loop.TrainState, dict]:
    key, k_roll, k_perm = jax.random.split(state.key, 3)
    data = rollout(state.params, frozen, k_roll)
    advantage = ppo.episode_advantages(data.returns, r.advantage_eps)
    mb_size = batch // r.num_minibatches

    def minibatch_step(carry, idx):
      params, opt_state = carry
      if r.num_minibatches == 1:
        mb, adv = data, advantage
      else:
        mb = jax.tree.map(lambda x: x[idx], data)
        adv = advantage[idx]
      grads, metrics = jax.grad(loss_fn, has_aux=True)(params, frozen, mb,
                                                       adv)
      updates, opt_state = tx.update(grads, opt_state, params)
      metrics['grad_norm'] = optax.tree.norm(grads)
      return (optax.apply_updates(params, updates), opt_state), metrics

    def epoch(carry, k):
      perm = jax.random.permutation(k, batch).reshape(r.num_minibatches,
                                                      mb_size)
      return jax.lax.scan(minibatch_step, carry, perm)

    (params, opt_state), metrics = jax.lax.scan(
        epoch, (state.params, state.opt_state),
        jax.random.split(k_perm, r.num_epochs))
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics.update({k: v.mean() for k, v in data.stats.items()})
    metrics['return'] = data.returns.mean()
    metrics['decisions_per_step'] = (data.stats['decisions'].sum()
                                     / jnp.maximum(data.stats['raw_steps']
                                                   .sum(), 1.0))
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state, key=key), metrics

  def chunk(state: loop.TrainState, frozen: Any
            ) -> tuple[loop.TrainState, dict]:
    return jax.lax.scan(lambda s, _: update(s, frozen), state, None,
                        length=r.log_every)

  train_chunk = jax.jit(jax.vmap(chunk, in_axes=(0, None)))
  return Learner(method=method, env=internal, policy=policy, model=model,
                 init=init_state, rollout=rollout, loss=loss_fn,
                 update=update, train_chunk=train_chunk)


# --------------------------------------------------------------------------
# The job.


def frozen_params(config: Config, workdir: str
                  ) -> tuple[Any, Any, ienv.AbstractActionModule | None]:
  """(frozen, init source, abstract-action module or None) of the method.

  frozen: what the agent does not train (`InternalEnvParams(θ, φ)`, or None
  for raw action); init source: what `Learner.init` starts from (θ for raw
  action). Reads `<workdir>/checkpoints/pretrain` (θ) and the method's
  metacontroller run (irl/train/metacontroller.py: `load_params`) or
  CompILE run (irl/train/compile.py: `load_params`).
  """
  method = config.rl.method
  if method == 'raw_action':
    return None, pretrain.load_pretrained(config, workdir, 'raw-action RL'), None
  if method == 'compile':
    phi, theta = compile_train.load_params(config, workdir)
    frozen = ienv.InternalEnvParams(base=theta, module=phi)
    return frozen, frozen, compile_module(config)
  phi, theta = mct.load_params(config, workdir)
  frozen = ienv.InternalEnvParams(base=theta, module=phi)
  return frozen, frozen, None


@functools.lru_cache(maxsize=4)
def _compile_module(config: Config) -> ienv.AbstractActionModule:
  return ienv.compile_module(compile_train.make_adapter(config))


def compile_module(config: Config) -> ienv.AbstractActionModule:
  """CompILE's abstract-action module of `config.compile` (one object per
  config, so learners and their compilations are shared)."""
  return _compile_module(config_lib.factory_key(config))


def fingerprint(config: Config) -> dict:
  config = config_lib.build(config)
  keys = ['env', 'model', 'rl.method', 'rl.batch_size', 'rl.learning_rate',
          'rl.weight_decay', 'rl.grad_clip', 'rl.clip_eps', 'rl.num_epochs',
          'rl.num_minibatches', 'rl.entropy_coef', 'rl.advantage_eps',
          'rl.switch_threshold', 'rl.max_decisions', 'rl.temperature',
          'rl.policy_width', 'rl.policy_heads', 'rl.policy_mlp_dim',
          'rl.init_log_std', 'rl.seeds', 'seed',
          # The θ step loaded: a run on θ@24k is not one on θ@12k, even where
          # the pretraining checkpoint does not tell them apart.
          'pretrain.num_steps'] + [
              f'rl.{f}' for f in optim.SCHEDULE_FIELDS] + list(
              pretrain.FINGERPRINT_KEYS + pretrain.data_keys(config))
  if config.rl.method == 'raw_action':
    keys.append('rl.raw_action_params')
  elif config.rl.method == 'compile':
    keys.append('compile')
  else:
    keys.append('metacontroller')
  if config.rl.method == 'cotrained':
    keys.append('rl.cotrained_base_model')
  return config_utils.config_fingerprint(config, sorted(set(keys)))


def train(config: Config, workdir: str,
          method: str | None = None,
          progress_fn: loop.ProgressFn | None = None) -> dict:
  """Runs `rl.method` (or `method`) for all `rl.seeds` at once, resuming.

  Writes `<workdir>/checkpoints/rl_<method>`, metrics
  `<workdir>/metrics/rl_<method>*.json*` (+ TensorBoard) with each seed's
  success averaged over every chunk of `rl.log_every` updates, and its config
  in `<workdir>/rl_<method>/` (`rl_<method>_task_<task>` for a post-training
  task other than the paper's), where `irl.analysis.fig8.run_curve` draws
  the curve.
  """
  config = methods.method_config(config, method)
  r = config.rl
  name = methods.run_name(config)
  frozen, source, module = frozen_params(config, workdir)
  learner = make_learner(config, module=module)
  out_dir = os.path.join(workdir, name)
  os.makedirs(out_dir, exist_ok=True)
  config_utils.save_config(config, out_dir)
  seeds = [int(s) for s in r.seeds]
  init = jax.jit(jax.vmap(learner.init, in_axes=(0, None)))
  init_states = init(jnp.stack([jax.random.key(s) for s in seeds]), source)
  ckpt = loop.checkpointer(workdir, name, r, fingerprint(config),
                           ADDED_FIELDS)
  states, frozen, start, writer = loop.resume(
      ckpt, r.num_updates, init_states, 'rl.num_updates', workdir, name,
      frozen)
  def scalars(metrics, seconds, step):               # metrics [S, N] each
    out = {k: float(np.mean(v)) for k, v in metrics.items()}
    per_seed = metrics['success'].mean(1)
    out.update({f'success/seed_{s}': float(v)
                for s, v in zip(seeds, per_seed)})
    out['success_median'] = float(np.median(per_seed))
    out['episodes'] = step * r.batch_size
    out['episodes_per_sec'] = (r.log_every * r.batch_size * len(seeds)
                               / seconds)
    return out

  states, done = loop.run(
      lambda s: learner.train_chunk(s, frozen), states,
      num_steps=r.num_updates, log_every=r.log_every, start=start, desc=name,
      writer=writer, checkpointer=ckpt,
      show=('success_median', 'decisions', 'raw_steps', 'episodes_per_sec'),
      scalars=scalars, rate_key='updates_per_sec', progress_fn=progress_fn)
  step = done.step
  ckpt.close()
  writer.flush()
  parallel.barrier(f'{name} metrics written')   # process 0 writes them
  curve = success_curve(writer.jsonl_path, seeds)
  final = curve['success'][-1] if len(curve['update']) else np.zeros(len(seeds))
  summary = {'method': r.method, 'num_updates': int(step),
             'episodes_per_seed': int(step * r.batch_size),
             'seeds': seeds, 'final_success': [float(x) for x in final],
             'final_success_median': float(np.median(final)),
             'train_seconds_this_run': done.seconds,
             'resumed_from': int(start)}
  writer.write_summary(summary)
  writer.close()
  return summary


def success_curve(jsonl_path: str, seeds: list[int]) -> dict[str, np.ndarray]:
  """{'update': [N], 'success': [N, S]} from a run's metrics JSONL."""
  records = metrics_lib.read_jsonl(jsonl_path) if os.path.exists(
      jsonl_path) else []
  by_step = {int(rec['step']): rec for rec in records}
  steps = sorted(by_step)
  success = np.array([[by_step[s].get(f'success/seed_{seed}', np.nan)
                       for seed in seeds] for s in steps], np.float64)
  return {'update': np.array(steps, np.int64),
          'success': success.reshape(len(steps), len(seeds))}
