"""Code transfer (docs/method.md §6, the paper's ant result): inject a code
the metacontroller found and watch the base model follow it.

Three measurements, each against the same episodes without injection (same
layouts, same sampling keys, at `control.temperature`):

1. **Go to subgoal k.** The code of subgoal k (below) is applied at every
   step of an episode whose task is k's colours alone; success is reaching
   them before any other colour (under the pinpad rules a wrong colour ends
   the episode). The paper: 23% → 36% on the ant.
2. **Force an unseen transition.** On the post-training task, the base model
   acts alone except while the first subgoal whose transition from the one
   before never occurs in pretraining is pursued (0 → 1 on the ant's
   0-1-2-3), when that subgoal's code is applied. The paper: success 10% →
   24%.
3. **Compose the codes.** On the post-training task, every subgoal's code
   is applied while that subgoal is pursued: the codes played in the task's
   order, what a policy that plays each subgoal's code in turn achieves, a
   first look at what internal RL can compose from them. Also at
   `COMPOSE_SCALES` times each code: the KL pulls posterior codes towards 0,
   so a code may point the right way and still be too short to override
   the base model's prior at a transition it never saw (a policy over z is
   free to scale it).

Choices where the paper is silent: the code of subgoal k is the mean of the
metacontroller's codes (posterior means, the code in use) over the held-out
D* steps whose ground-truth subgoal is k; the steps are the metacontroller's
own evaluation episodes (`segmenting.eval_key`). The code in use switches
where the ground-truth subgoal changes (where a pair-code metacontroller's
own gate fires too, measured on the gridworld: docs/cpu_scale.md).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from irl import acting
from irl import config as config_lib
from irl.analysis.control_rollouts import seen_successors
from irl.analysis.controllers import controlled_forward
from irl.config import Config
from irl.envs import registry
from irl.envs import tasks as tasks_lib
from irl.models import BaseModel, ControllerDecoder, init_cache
from irl.train import metacontroller as mct
from irl.utils import config_utils
from irl.utils import parallel

# Multiples of each subgoal's mean code in the 'compose' measurement.
COMPOSE_SCALES = (1.0, 1.5, 2.0)


def subgoal_codes(config: Config, workdir: str) -> tuple[np.ndarray, Any,
                                                         Any]:
  """([K, n_z] the mean code per subgoal, φ, θ) of the workdir's finished
  metacontroller (the config's variant)."""
  trainer = mct.make_trainer(config)
  phi, theta = mct.load_params(config, workdir)
  frozen = config.metacontroller.base_model == 'frozen'
  params = {'metacontroller': phi}
  if not frozen:
    params['base_model'] = theta
  arrays = mct.collect_eval(
      config, lambda k: trainer.evaluate_jit(params, theta if frozen
                                             else None, k))
  k = config_lib.num_subgoals(config)
  codes, subgoal = arrays['code'], arrays['subgoal']
  keep = arrays['valid'] & (subgoal >= 0)
  # A subgoal never pursued in the held-out episodes has no code (nan).
  mean = np.full((k, codes.shape[-1]), np.nan, np.float32)
  for g in range(k):
    rows = codes[keep & (subgoal == g)]
    if len(rows):
      mean[g] = rows.mean(0)
  return mean, phi, theta


def transition_name(task: tuple[int, ...], size: int, position: int) -> str:
  """The transition into subgoal number `position` of `task`, by the
  subgoals' own colours: '0->1' on the ant's 0-1-2-3, '01->23' on the
  grid's 0-1-2-3-...."""
  part = lambda i: ''.join(str(c) for c in task[i * size:(i + 1) * size])
  return f'{part(position - 1)}->{part(position)}'


def first_unseen_transition(config: Config) -> int | None:
  """Index (in subgoals) of the post-task's first subgoal whose transition
  from the one before is unseen in pretraining; None if every one is seen."""
  size = config.env.subgoal_size
  pairs = config_lib.post_task_pairs(config)
  follows = seen_successors(config_lib.env_params(config).tasks, size)
  for i in range(1, len(pairs)):
    if pairs[i] not in follows.get(pairs[i - 1], set()):
      return i
  return None


def code_index(mode: str, task: jax.Array, task_pos: jax.Array,
               task_len: jax.Array, size: int, position: int, none: int
               ) -> jax.Array:
  """[B] int32: which code each episode applies now (`none`: no edit).

  task [B, max_task_len] colours (−1 padded), task_pos [B] colours done,
  task_len [B]; subgoal = colour // size. Modes as in `_rollout_fn`.
  """
  if mode == 'target':
    return task[:, 0] // size
  # The subgoal pursued; the last one's code stays on once the task is done.
  now = jnp.minimum(task_pos, task_len - 1)
  pursued = jnp.take_along_axis(task, now[:, None], 1)[:, 0] // size
  if mode == 'compose':
    return pursued
  return jnp.where(task_pos // size == position, pursued, none)   # 'force'


@functools.lru_cache(maxsize=8)
def _rollout_fn(model: BaseModel, decoder: ControllerDecoder, layer: int,
                env: registry.Environment, env_params: Any, num_episodes: int,
                temperature: float, mode: str, position: int):
  """jitted (θ, factors [K + 1, ...] (the last: no edit), use, key) ->
  (success [E], task_id [E]). mode 'target': the code of the episode's task
  (one subgoal) at every step; 'force': the code of the task's subgoal
  number `position` while it is pursued; 'compose': the code of whichever
  subgoal is pursued. use: apply the codes at all."""
  size = env_params.subgoal_size
  batched = env.batched(env_params)

  @jax.jit
  def run(base_params, factors, use, key):
    none = factors[0].shape[0] - 1

    def policy(cache, obs, env_state, k):
      code = code_index(mode, env_state.task, env_state.task_pos,
                        env_state.task_len, size, position, none)
      idx = jnp.where(use, code, none)
      out = controlled_forward(model, base_params, decoder, factors, layer,
                               obs[:, None], idx[:, None], cache)
      action, _ = acting.sample_head(out, k, temperature)
      return action, out.cache, {}

    state, _, _, _ = acting.episodes(
        batched, policy, init_cache(model.config, num_episodes), num_episodes,
        key, env_params.max_steps)
    return state.success, state.task_id

  return run


def _episodes(fn, theta, factors, use: bool, key) -> tuple[np.ndarray, ...]:
  """(success [E], task_id [E]) of `fn` with (use) or without the codes."""
  return parallel.to_host(fn(theta, factors, jnp.bool_(use), key))


def _success(fn, theta, factors, use: bool, key) -> float:
  """Success rate of `fn`'s episodes with (use) or without the codes."""
  return float(_episodes(fn, theta, factors, use, key)[0].mean())


def _with_and_without(fn, theta, factors, key) -> dict[str, np.ndarray]:
  """{'none': (success, task_id), 'code': ...} on the same episodes."""
  return {name: _episodes(fn, theta, factors, use, key)
          for name, use in (('none', False), ('code', True))}


def run(config: Config, workdir: str) -> dict[str, Any]:
  """The three measurements for the workdir's metacontroller; writes
  `<workdir>/code_injection/summary.json`."""
  config = config_lib.build(config)
  cc = config.control
  codes, phi, theta = subgoal_codes(config, workdir)
  trainer = mct.make_trainer(config)
  layer = trainer.model.config.layer
  has_code = ~np.isnan(codes).any(-1)

  def factors_at(scale: float) -> tuple[jax.Array, ...]:
    factors = trainer.model.apply({'params': phi['params']},
                                  jnp.asarray(np.nan_to_num(codes) * scale),
                                  method='controller')
    # Index K: the identity edit (no injection) in the same compiled rollout.
    return tuple(jnp.concatenate([f, jnp.zeros_like(f[:1])]) for f in factors)

  factors = factors_at(1.0)
  decoder = ControllerDecoder(config.model.width)  # only wraps the factors
  env = registry.from_config(config)
  size = config.env.subgoal_size
  key = jax.random.key(config.seed + 7)

  # Every subgoal as a one-subgoal task, drawn uniformly per episode.
  k = codes.shape[0]
  single = tuple(tuple(range(g * size, min((g + 1) * size,
                                           config.env.num_colours)))
                 for g in range(k))
  params = config_lib.env_params(config).replace(tasks=single)
  fn = _rollout_fn(trainer.base_model, decoder, layer, env, params,
                   cc.num_episodes, float(cc.temperature), 'target', 0)
  runs = _with_and_without(fn, theta, factors, key)
  reach = {g: {name: float(success[task == g].mean())
                  if (task == g).any() and has_code[g] else float('nan')
               for name, (success, task) in runs.items()}
           for g in range(k)}
  scored = has_code[runs['none'][1]]       # episodes whose subgoal has a code
  summary: dict[str, Any] = {
      'reach_subgoal': reach,
      'reach_none': float(runs['none'][0][scored].mean()),
      'reach_code': float(runs['code'][0][scored].mean())}

  position = first_unseen_transition(config)
  pairs = config_lib.post_task_pairs(config)
  post = config_lib.env_params(config, post=True)
  post_task = tasks_lib.parse_task(config.env.post_task)
  if position is not None and has_code[pairs[position]]:
    fn = _rollout_fn(trainer.base_model, decoder, layer, env, post,
                     cc.num_episodes, float(cc.temperature), 'force',
                     position)
    runs = _with_and_without(fn, theta, factors, key)
    summary['force'] = {
        'transition': transition_name(post_task, size, position),
        'post_task': config.env.post_task,
        **{name: float(success.mean())
           for name, (success, _) in runs.items()}}
  # Every colour's subgoal needs a code (else it would get controller(0)).
  if has_code[[c // size for c in post_task]].all():
    fn = _rollout_fn(trainer.base_model, decoder, layer, env, post,
                     cc.num_episodes, float(cc.temperature), 'compose', 0)
    # Without codes the mode does not matter: forcing's baseline is this one.
    none = (summary['force']['none'] if 'force' in summary
            else _success(fn, theta, factors, False, key))
    compose = {'post_task': config.env.post_task, 'none': none}
    for scale in COMPOSE_SCALES:
      scaled = factors if scale == 1.0 else factors_at(scale)
      compose[f'x{scale:g}'] = _success(fn, theta, scaled, True, key)
    summary['compose'] = compose
  out_dir = os.path.join(workdir, 'code_injection')
  os.makedirs(out_dir, exist_ok=True)
  config_utils.write_json(os.path.join(out_dir, 'summary.json'), summary)
  return summary
