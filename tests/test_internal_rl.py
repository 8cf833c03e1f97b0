"""Internal RL: the abstract step is a loop of raw steps, episodes end
mid-abstract-action correctly, the flat rollout is the abstract-step schedule,
the PPO loss, the policy's step mode, config errors, and a tiny run learns.

Tiny sizes (the `test` preset on a 4x4 grid with two colours); compiled
functions are shared through module-level caches.
"""

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gridworld
from irl import config as config_lib
from irl.analysis import fig8
from irl.envs import gridworld_pinpad as gw
from irl.envs import registry
from irl.models import BaseModel, common, init_cache
from irl.models import metacontroller as mc_lib
from irl.models.intervention import Intervention
from irl.rl import internal_env as ienv
from irl.rl import methods as rl_methods
from irl.rl import policy as policy_lib
from irl.rl import ppo
from irl.rl import rollouts as rl_rollouts
from irl.rl import train as rlt
from irl.train import metacontroller as mct
from irl.train import pretrain
from irl.utils import config_utils

B = 6


def _config(**rl):
  c = gridworld.get_config('test')
  c.env.grid_size = 4
  c.env.num_colours = 2
  c.env.num_walls = 0
  c.env.max_steps = 8
  c.env.pretrain_tasks = ['0-1']
  c.env.post_task = '0'
  c.data.seq_len = c.data.post_seq_len = c.metacontroller.seq_len = 8
  if 'compile' in c:
    c.compile.seq_len = 8
  c.rl.batch_size = 64
  c.rl.learning_rate = 3e-3
  c.rl.log_every = 50
  c.rl.num_updates = 200
  c.rl.save_every = 50
  for k, v in rl.items():
    c.rl[k] = v
  return c


@functools.lru_cache(maxsize=None)
def _frozen() -> ienv.InternalEnvParams:
  """A random θ and φ; φ's decoder gets a random B (it starts at 0: U = 0)."""
  c = _config()
  theta = pretrain.make_pretrainer(c).init(jax.random.key(0)).params
  mc = mc_lib.Metacontroller(mct.metacontroller_config(c))
  phi = mc.init(jax.random.key(1), jnp.zeros((1, 1, c.model.width)),
                jnp.ones((1, 1), bool))
  b = phi['params']['decoder']['b']
  rng = np.random.default_rng(0)
  kernel = rng.standard_normal(b['kernel'].shape) / np.sqrt(
      b['kernel'].shape[0])
  phi['params']['decoder']['b'] = {
      'kernel': jnp.asarray(kernel, jnp.float32), 'bias': b['bias']}
  return ienv.InternalEnvParams(base=theta, module=phi)


@functools.lru_cache(maxsize=None)
def _parts():
  c = _config()
  model = BaseModel(pretrain.model_config(c))
  mc = mc_lib.Metacontroller(mct.metacontroller_config(c))
  env = ienv.InternalEnv(model=model, module=ienv.metacontroller_module(mc),
                         env=registry.GRIDWORLD, env_params=config_lib.env_params(c, post=True),
                         max_decisions=8)
  return c, model, mc, env


@functools.lru_cache(maxsize=None)
def _env_fns():
  _, _, _, env = _parts()
  return (jax.jit(env.reset, static_argnums=2), jax.jit(env.step))


@functools.lru_cache(maxsize=None)
def _reference_fns():
  """Batch-1 jitted pieces of one raw step, for the plain Python loop."""
  c, model, mc, env = _parts()
  layer = env.layer
  lower = jax.jit(lambda theta, obs, cache: model.apply(
      theta, obs[None, None], layer, cache, method=BaseModel.lower))
  upper = jax.jit(lambda theta, e, iv, cache: model.apply(
      theta, e[:, None], layer, iv, cache, method=BaseModel.upper))
  step = jax.jit(lambda phi, st, e, z, fire: mc.apply(
      phi, st, e, z, fire, method=mc_lib.Metacontroller.step))
  switch = jax.jit(lambda phi, st, e: mc.apply(
      phi, st, e, method=mc_lib.Metacontroller.switch))
  env_step = jax.jit(gw.step)
  return lower, upper, step, switch, env_step


def _row(tree, b):
  return jax.tree.map(lambda x: x[b:b + 1], tree)


def _reference_abstract_step(state, b, z):
  """Episode b of `state`: raw steps in a Python loop until β ≥ 0.5 or done."""
  lower, upper, step, switch, env_step = _reference_fns()
  _, _, mc, env = _parts()
  frozen = _frozen()
  st, cache = _row(state.module, b), _row(state.cache, b)
  e, env_state = state.residual[b:b + 1], jax.tree.map(lambda x: x[b],
                                                        state.env)
  t, total, first = int(state.raw_steps[b]), 0.0, True
  if bool(state.done[b]):
    return None
  while True:
    st, _, factors = step(frozen.module, st, e, z[b:b + 1],
                          jnp.float32([1.0 if first else 0.0]))
    iv = mc.intervention(tuple(f[:, None] for f in factors))
    out = upper(frozen.base, e, iv, cache)
    key = jax.random.fold_in(state.key[b], t)
    action = jax.random.categorical(key, out.action_logits[0, 0])
    env_state, obs, reward, done, _ = env_step(env_state, action,
                                               env.env_params)
    e, _, cache = lower(frozen.base, obs, out.cache)
    e = e[:, 0]
    beta = switch(frozen.module, st, e)
    total += float(reward)
    t += 1
    first = False
    if bool(done) or float(beta[0]) >= 0.5:
      return {'residual': np.asarray(e[0]), 'reward': total,
              'done': bool(done), 'raw_steps': t, 'agent': int(env_state.agent),
              'time': int(env_state.time)}


def test_reset_reads_the_clean_residual_of_the_first_observation():
  reset, _ = _env_fns()
  lower, *_ = _reference_fns()
  _, model, _, _ = _parts()
  state, e = reset(_frozen(), jax.random.key(0), B)
  assert e.shape == (B, model.config.width)
  np.testing.assert_array_equal(state.switch_gate, 1.0)
  for b in (0, B - 1):
    obs = gw.observe(state.env.grid[b], state.env.agent[b],
                     _parts()[3].env_params)
    ref, _, _ = lower(_frozen().base, obs, init_cache(model.config, 1))
    np.testing.assert_allclose(e[b], ref[0, 0], rtol=1e-5, atol=1e-5)


def test_abstract_step_equals_python_loop_of_raw_steps():
  reset, step = _env_fns()
  state, _ = reset(_frozen(), jax.random.key(3), B)
  lengths = []
  for k in range(3):
    z = jax.random.normal(jax.random.key(10 + k), (B, 8))
    refs = [_reference_abstract_step(state, b, z) for b in range(B)]
    prev_steps = np.asarray(state.raw_steps)
    state, e, reward, done, info = step(_frozen(), state, z)
    for b, ref in enumerate(refs):
      if ref is None:   # already done: nothing happens
        assert info['raw_steps'][b] == 0 and reward[b] == 0
        continue
      np.testing.assert_allclose(e[b], ref['residual'], rtol=1e-4, atol=1e-4)
      assert float(reward[b]) == ref['reward']
      assert bool(done[b]) == ref['done']
      assert int(state.raw_steps[b]) == ref['raw_steps']
      assert int(info['raw_steps'][b]) == ref['raw_steps'] - prev_steps[b]
      assert int(state.env.agent[b]) == ref['agent']
      assert int(state.env.time[b]) == ref['time']
      lengths.append(int(info['raw_steps'][b]))
  # The random gate gives abstract actions of several lengths.
  assert min(lengths) == 1 and max(lengths) > 1


# A scripted environment: episode b ends with reward 1 after `end` raw steps
# and, were it stepped after that, would pay again (so extra steps show).


@flax.struct.dataclass
class _Scripted:
  t: jax.Array
  end: jax.Array
  done: jax.Array


_ENDS = jnp.array([2, 5, 3, 6, 1, 4])


def _scripted_reset(key, params):
  index = jax.random.randint(key, (), 0, 1 << 30) % _ENDS.shape[0]
  state = _Scripted(t=jnp.int32(0), end=_ENDS[index], done=jnp.bool_(False))
  return state, jnp.zeros((params.obs_dim,), jnp.float32)


def _scripted_step(state, action, params):
  t = state.t + 1
  reward = (t >= state.end).astype(jnp.float32)
  obs = gw.observe(jnp.full((params.num_cells,), gw.EMPTY, jnp.int32),
                   (t + action) % params.num_cells, params)
  new = _Scripted(t=t, end=state.end, done=t >= state.end)
  return new, obs, reward, new.done, {}


def _stub_module(width, fire_always):
  """Never (or always) fires after the first step; a zero intervention."""
  def switch(params, state, e, obs):
    del params, state, obs
    return jnp.full(e.shape[:1], 1.0 if fire_always else 0.0)

  def advance(params, state, e, obs, proposal, fire):
    del params, e, obs, proposal
    z = jnp.zeros((fire.shape[0], 1, width, 1), jnp.float32)
    return state + fire.astype(jnp.int32), Intervention.low_rank(1, z, z)

  return ienv.AbstractActionModule(
      layer=1, latent_dim=8,
      initial_state=lambda b: jnp.zeros((b,), jnp.int32),
      switch=switch, advance=advance)


@functools.lru_cache(maxsize=None)
def _scripted_env(fire_always, max_decisions):
  _, model, _, env = _parts()
  return env._replace(module=_stub_module(model.config.width, fire_always),
                      max_decisions=max_decisions,
                      env=dataclasses.replace(registry.GRIDWORLD,
                                              reset=_scripted_reset,
                                              step=_scripted_step))


def _scripted_ends(state):
  return np.asarray(state.env.end)


def test_episode_that_ends_mid_abstract_action_stops():
  env = _scripted_env(False, 8)
  state, _ = jax.jit(env.reset, static_argnums=2)(_frozen(), jax.random.key(0),
                                                  B)
  ends = _scripted_ends(state)
  assert len(set(ends.tolist())) > 2
  step = jax.jit(env.step)
  z = jnp.ones((B, 8))
  state, _, reward, done, info = step(_frozen(), state, z)
  # One abstract action runs to the episode's end: no step after done, the
  # reward counted once.
  np.testing.assert_array_equal(info['raw_steps'], ends)
  np.testing.assert_array_equal(state.env.t, ends)
  np.testing.assert_array_equal(reward, 1.0)
  assert bool(done.all())
  np.testing.assert_array_equal(state.decisions, 1)
  state, _, reward, done, info = step(_frozen(), state, z)
  np.testing.assert_array_equal(info['raw_steps'], 0)
  np.testing.assert_array_equal(reward, 0.0)
  np.testing.assert_array_equal(state.episode_return, 1.0)
  np.testing.assert_array_equal(state.env.t, ends)


@functools.lru_cache(maxsize=None)
def _policy():
  c = _config()
  return policy_lib.LatentPolicy(rl_methods.policy_config(c, 8))


@functools.lru_cache(maxsize=None)
def _policy_params():
  c = _config()
  return _policy().init(jax.random.key(5), jnp.zeros((1, 1, c.model.width)))


def _rollout(env, batch, key):
  return jax.jit(functools.partial(rl_rollouts.internal_rollout, env, _policy(),
                                   batch))(_policy_params(), _frozen(), key)


def test_rollout_truncates_at_max_decisions():
  # β ≡ 1: every raw step is a decision; 3 slots end longer episodes unpaid.
  env = _scripted_env(True, 3)
  data = _rollout(env, B, jax.random.key(0))
  state, _ = env.reset(_frozen(), jax.random.key(0), B)
  ends = _scripted_ends(state)
  ok = ends <= 3
  np.testing.assert_array_equal(data.returns, ok.astype(np.float32))
  np.testing.assert_array_equal(data.stats['raw_steps'], np.minimum(ends, 3))
  np.testing.assert_array_equal(data.stats['decisions'], np.minimum(ends, 3))
  np.testing.assert_array_equal(data.stats['truncated'], (~ok).astype(float))
  np.testing.assert_array_equal(data.valid.sum(1), np.minimum(ends, 3))


def test_rollout_of_never_switching_module_decides_once():
  env = _scripted_env(False, 3)
  data = _rollout(env, B, jax.random.key(0))
  state, _ = env.reset(_frozen(), jax.random.key(0), B)
  np.testing.assert_array_equal(data.returns, 1.0)
  np.testing.assert_array_equal(data.stats['raw_steps'], _scripted_ends(state))
  np.testing.assert_array_equal(data.valid.sum(1), 1)


def test_flat_rollout_is_the_abstract_step_schedule():
  """The training rollout equals driving `InternalEnv.step` with the policy."""
  _, _, _, env = _parts()
  reset, step = _env_fns()
  key = jax.random.key(4)
  data = _rollout(env, B, key)
  policy, params = _policy(), _policy_params()
  apply = jax.jit(policy.apply)
  state, e = reset(_frozen(), key, B)
  cache = policy.initial_cache(B)
  proposals, log_probs, returns = [], [], np.zeros(B)
  for k in range(env.max_decisions):
    if bool(state.done.all()):
      break
    mean, log_std, new_cache = apply(params, e[:, None], cache)
    live = ~state.done
    cache = common.select_where(live, new_cache, cache)
    keys = jax.vmap(jax.random.fold_in)(state.key,
                                        rl_rollouts.NOISE_OFFSET + state.decisions)
    noise = jax.vmap(lambda k_: jax.random.normal(k_, (8,)))(keys)
    z = mean[:, 0] + jnp.exp(log_std[:, 0]) * noise
    proposals.append(np.where(live[:, None], z, 0.0))
    log_probs.append(np.where(live, policy_lib.gaussian_log_prob(
        z, mean[:, 0], log_std[:, 0]), 0.0))
    state, e, reward, _, _ = step(_frozen(), state, z)
    returns += np.asarray(reward)
  np.testing.assert_array_equal(data.returns, returns)
  np.testing.assert_array_equal(data.stats['raw_steps'], state.raw_steps)
  np.testing.assert_array_equal(data.stats['decisions'], state.decisions)
  proposals = np.stack(proposals, 1)
  log_probs = np.stack(log_probs, 1)
  n = proposals.shape[1]
  valid = np.asarray(data.valid)
  np.testing.assert_allclose(np.where(valid[:, :n, None], data.actions[:, :n],
                                      0.0), proposals, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.where(valid[:, :n], data.log_prob[:, :n], 0.0),
                             log_probs, rtol=1e-4, atol=1e-4)
  assert not valid[:, n:].any()


def test_policy_step_mode_equals_parallel_forward():
  policy, params = _policy(), _policy_params()
  e = jax.random.normal(jax.random.key(0), (2, 5, _config().model.width))
  mean, log_std, _ = policy.apply(params, e)
  cache = policy.initial_cache(2)
  for t in range(5):
    m, s, cache = policy.apply(params, e[:, t:t + 1], cache)
    np.testing.assert_allclose(m[:, 0], mean[:, t], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s[:, 0], log_std[:, t], rtol=1e-5, atol=1e-5)
  # The initial policy is close to N(0, I) (small head).
  assert float(jnp.abs(mean).max()) < 0.5
  assert float(jnp.abs(log_std).max()) < 0.5


def test_gaussian_log_prob():
  z, mean, log_std = jnp.array([1.0, -2.0]), jnp.array([0.5, 0.0]), jnp.array(
      [0.0, np.log(2.0)])
  expected = (-0.5 * 0.25 - 0.5 * np.log(2 * np.pi)
              - 0.5 * 1.0 - np.log(2.0) - 0.5 * np.log(2 * np.pi))
  np.testing.assert_allclose(policy_lib.gaussian_log_prob(z, mean, log_std),
                             expected, rtol=1e-6)


def test_episode_advantages():
  adv = ppo.episode_advantages(jnp.array([1.0, 0.0, 0.0, 1.0]))
  np.testing.assert_allclose(adv, np.array([1, -1, -1, 1]) * 0.5 / 0.501,
                             rtol=1e-6)
  np.testing.assert_array_equal(ppo.episode_advantages(jnp.zeros(3)), 0.0)


def test_ppo_loss_matches_hand_computation():
  old = jnp.zeros((2, 3))
  new = jnp.log(jnp.array([[1.5, 0.9, 2.0], [0.5, 1.1, 1.0]]))
  adv = jnp.array([1.0, -2.0])
  valid = jnp.array([[True, True, False], [True, True, True]])
  loss, metrics = ppo.ppo_clip_loss(new, old, adv, valid, clip_eps=0.2)
  # Episode 0 (A = 1): min(1.5, 1.2) = 1.2; min(0.9, 0.9) = 0.9; masked.
  # Episode 1 (A = -2): min(-1.0, -1.6) = -1.6; min(-2.2, -2.2) = -2.2;
  # min(-2.0, -2.0) = -2.0.
  expected = -(1.2 + 0.9 - 1.6 - 2.2 - 2.0) / 5
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(metrics['clip_fraction'], 2 / 5, rtol=1e-6)
  ratio = np.array([1.5, 0.9, 0.5, 1.1, 1.0])
  np.testing.assert_allclose(metrics['approx_kl'],
                             np.mean(ratio - 1 - np.log(ratio)), rtol=1e-5)
  # Entropy bonus enters with its coefficient.
  ent = jnp.ones((2, 3)) * 3.0
  loss2, _ = ppo.ppo_clip_loss(new, old, adv, valid, 0.2, ent, 0.1)
  np.testing.assert_allclose(loss2, expected - 0.3, rtol=1e-6)


@pytest.mark.parametrize('field,value,match', [
    ('method', 'ppo', 'config.rl.method'),
    ('batch_size', 1, 'config.rl.batch_size'),
    ('num_minibatches', 3, 'config.rl.num_minibatches'),
    ('log_every', 3, 'config.rl.num_updates'),
    ('learning_rate', 0.0, 'config.rl.learning_rate'),
    ('clip_eps', -0.1, 'config.rl.clip_eps'),
    ('switch_threshold', 1.5, 'config.rl.switch_threshold'),
    ('max_decisions', 0, 'config.rl.max_decisions'),
    ('policy_heads', 3, 'config.rl.policy_heads'),
    ('raw_action_params', 'head', 'config.rl.raw_action_params'),
    ('cotrained_base_model', 'frozen', 'config.rl.cotrained_base_model'),
    ('seeds', [0, 0], 'config.rl.seeds'),
    ('fig8_methods', ['internal', 'dqn'], r'config.rl.fig8_methods\[1\]'),
])
def test_bad_rl_fields_raise(field, value, match):
  c = _config()
  c.rl[field] = value
  with pytest.raises(config_utils.ConfigError, match=match):
    config_lib.build(c)


def test_presets_validate():
  for preset in ('paper', 'cpu', 'test'):
    c = gridworld.get_config(preset)
    for method in ('internal', 'raw_action', 'no_temporal_abstraction',
                   'cotrained'):
      rl_methods.method_config(c, method)
  assert rl_methods.decision_slots(rl_methods.method_config(c, 'no_temporal_abstraction')
                            ) == c.env.max_steps


def _fixed_layout_reset(key, params):
  # One layout where the untrained model succeeds ~17% of the time; the
  # policy must learn which codes steer the base model to colour 0 first.
  del key
  return gw.reset(jax.random.key(8), params)


_FIXED_LAYOUT = dataclasses.replace(registry.GRIDWORLD,
                                    reset=_fixed_layout_reset)


def test_tiny_internal_rl_run_learns():
  c = _config(seeds=[0, 1])
  learner = rlt.make_learner(c, 'internal', env=_FIXED_LAYOUT)
  states = jax.vmap(learner.init, in_axes=(0, None))(
      jnp.stack([jax.random.key(s) for s in c.rl.seeds]), None)
  success = []
  for _ in range(c.rl.num_updates // c.rl.log_every):
    states, metrics = learner.train_chunk(states, _frozen())
    success.append(np.asarray(metrics['success']).mean(1))   # [S]
  assert np.isfinite(np.asarray(metrics['policy_loss'])).all()
  first, last = success[0], success[-1]
  assert (last > first + 0.1).all(), success


def _fake_runs(config, workdir):
  """'Finished' pretraining and metacontroller checkpoints (random θ, φ)."""
  frozen = _frozen()
  pt = pretrain.make_pretrainer(config).init(jax.random.key(config.seed))
  ckpt = pretrain.checkpointer(config, workdir)
  ckpt.maybe_save(config.pretrain.num_steps, pt.replace(params=frozen.base),
                  force=True)
  ckpt.close()
  mc_config = rl_methods.method_config(config, 'internal')
  state = mct.make_trainer(mc_config).init(jax.random.key(0), frozen.base, 0.1)
  state = state.replace(params={'metacontroller': frozen.module})
  ckpt = mct.checkpointer(mc_config, workdir)
  ckpt.maybe_save(mc_config.metacontroller.num_steps, state, force=True)
  ckpt.close()


def test_fig8_job_trains_resumes_and_writes_curves(tmp_path):
  c = _config(num_updates=4, log_every=2, save_every=2, batch_size=8,
              fig8_methods=['internal', 'raw_action', 'compile'])
  workdir = str(tmp_path)
  _fake_runs(c, workdir)
  summary = fig8.run(c, workdir)
  # No CompILE run in this workdir: skipped.
  assert summary['methods'] == ['internal', 'raw_action']
  assert summary['skipped'] == ['compile']
  # This config's post-training task is not the paper's: its runs are
  # tagged with the task.
  assert rl_methods.fig8_dir(c) == 'fig8_task_0'
  for method in ('internal', 'raw_action'):
    assert summary['final_success'][method]['episodes'] == 32
    run = rl_methods.run_name(rl_methods.method_config(c, method))
    assert run == f'rl_{method}_task_0'
    rows = (tmp_path / run / 'success.csv').read_text().split()
    assert len(rows) == 1 + 2 * len(c.rl.seeds)
    assert (tmp_path / run / 'success.png').exists()
  lines = (tmp_path / 'fig8_task_0' / 'fig8.csv').read_text().split()
  assert lines[0] == 'method,update,episodes,median,q25,q75'
  assert len(lines) == 1 + 2 * 2
  assert (tmp_path / 'fig8_task_0' / 'fig8_success_log.png').exists()
  # The θ step an RL run started from is part of what its checkpoint means.
  assert rlt.fingerprint(c)['pretrain']['num_steps'] == c.pretrain.num_steps
  # A rerun resumes the finished runs: nothing is trained again.
  again = rlt.train(c, workdir, 'internal')
  assert again['resumed_from'] == 4 and again['num_updates'] == 4
  # Another novel task reuses the base model and metacontroller of this
  # workdir and trains its own run beside the first.
  other = _config(num_updates=2, log_every=2, save_every=2, batch_size=8)
  other.env.post_task = '1-0'
  fresh = rlt.train(other, workdir, 'internal')
  assert fresh['resumed_from'] == 0 and fresh['num_updates'] == 2
  assert not (tmp_path / 'rl_internal_task_1-0' / 'success.csv').exists()
  curve = fig8.run_curve(other, workdir, 'internal')
  assert curve['update'].tolist() == [2]
  np.testing.assert_allclose(curve['success'][-1], fresh['final_success'])
  assert (tmp_path / 'rl_internal_task_1-0' / 'success.csv').exists()


def test_code_injection_composes_the_codes_on_the_gridworld(tmp_path):
  """Code transfer runs on the gridworld too (a pipeline phase there): the
  post-training task with each subgoal's code while it is pursued, at every
  scale, beside the same episodes without codes."""
  from irl.analysis import code_injection
  c = _config()
  workdir = str(tmp_path)
  _fake_runs(c, workdir)
  summary = code_injection.run(c, workdir)
  assert set(summary['reach_subgoal']) == {0}
  assert 'force' not in summary        # one pair: no unseen transition
  compose = summary['compose']
  assert compose['post_task'] == '0'
  for scale in code_injection.COMPOSE_SCALES:
    assert 0.0 <= compose[f'x{scale:g}'] <= 1.0
  assert 0.0 <= compose['none'] <= 1.0
  assert (tmp_path / 'code_injection' / 'summary.json').exists()
