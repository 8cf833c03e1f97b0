"""Ground-truth controllers: training lowers the NLL of a frozen base model,
the controller switches with the task's pairs, the sweep runs end to end."""

import dataclasses
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gridworld
from irl import config as config_lib
from irl import pipeline
from irl.analysis import control_rollouts
from irl.analysis import controllability as ctl
from irl.analysis import controllers
from irl.envs import registry
from irl.train import pretrain
from irl.utils.config_utils import ConfigError


def _config():
  c = gridworld.get_config('test')
  c.pretrain.num_steps = 20
  c.control.layers = (1,)        # one compiled layer keeps the tests fast
  c.control.learning_rate = 1e-2
  c.control.num_steps = 40
  return c


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  """A tiny pretrained test-preset base model: (config, workdir, params)."""
  workdir = str(tmp_path_factory.mktemp('pretrained'))
  c = _config()
  pretrain.train(c, workdir, run_eval=False)
  return c, workdir, pretrain.load_params(c, workdir)


def test_locked_config_from_flags_is_accepted():
  # absl's config flags hand over a locked ConfigDict.
  locked = _config()
  locked.lock()
  assert controllers.make_control_trainer(locked, 1) is controllers.make_control_trainer(
      _config(), 1)


def test_training_lowers_nll_with_base_model_frozen(pretrained):
  c, _, params = pretrained
  trainer = controllers.make_control_trainer(c, 1)
  state = trainer.init(jax.random.key(0))
  # Only the decoder is optimised: the optimiser state mirrors its params.
  num_decoder = sum(x.size for x in jax.tree.leaves(state.params))
  num_opt = sum(x.size for x in jax.tree.leaves(state.opt_state))
  assert num_opt == 2 * num_decoder + 1   # Adam mu, nu and the step count
  before = [params]
  nll = []
  for _ in range(c.control.num_steps // c.control.log_every):
    state, metrics = trainer.train_chunk(state, params)
    nll.append(float(metrics['action_nll']))
  jax.tree.map(np.testing.assert_array_equal, before[0], params)
  held = [jax.device_get(trainer.heldout(state.params, params,
                                         jax.random.key(100 + i)))
          for i in range(4)]
  controlled = np.mean([h['controlled_action_nll'] for h in held])
  base = np.mean([h['base_action_nll'] for h in held])
  assert nll[-1] < nll[0], nll
  assert controlled < base - 0.01, (controlled, base)


# A scripted environment: task_pos advances one colour every `speed` steps
# (speed 1..3 per episode), whatever the action; the task is done at 12.


@chex.dataclass(frozen=True)
class _FakeState:
  time: jax.Array
  speed: jax.Array
  task_pos: jax.Array
  visits: jax.Array


def _fake_reset(key, params):
  speed = jax.random.randint(key, (), 1, 4)
  return (_FakeState(time=jnp.int32(0), speed=speed, task_pos=jnp.int32(0),
                     visits=jnp.full((params.max_visits,), -1, jnp.int32)),
          jnp.zeros((params.obs_dim,)))


def _fake_step(state, action, params):
  del action
  time = state.time + 1
  task_pos = jnp.minimum(time // state.speed, 12)
  done = task_pos >= 12
  reward = (done & (state.task_pos < 12)).astype(jnp.float32)
  new = state.replace(time=time, task_pos=task_pos)
  return new, jnp.zeros((params.obs_dim,)), reward, done, {
      'task_pos': task_pos}


_FAKE_ENV = dataclasses.replace(registry.GRIDWORLD, reset=_fake_reset,
                                step=_fake_step)


def test_controller_switches_when_a_pair_is_complete():
  c = _config()
  trainer = controllers.make_control_trainer(c, 1)
  base_params = pretrain.make_pretrainer(c).init(jax.random.key(0)).params
  factors = controllers.controller_factors(
      trainer.decoder, trainer.init(jax.random.key(1)).params, 4)
  env = config_lib.env_params(c, post=True).replace(max_steps=40)
  pairs = config_lib.post_task_pairs(c)
  assert pairs == [0, 1, 2, 3, 0, 1]
  key = jax.random.key(3)
  roll = control_rollouts.controlled_rollout(
      trainer.model, base_params, trainer.decoder, factors, 1, _FAKE_ENV,
      env, pairs, key, num_episodes=6)
  # The speeds the rollout's resets drew.
  keys = jax.random.split(jax.random.split(key)[0], 6)
  speeds = np.asarray(jax.vmap(_fake_reset, in_axes=(0, None))(keys, env)[0]
                      .speed)
  assert len(set(speeds.tolist())) > 1
  for e, speed in enumerate(speeds):
    expected = []
    for t in range(env.max_steps):
      pos = min(t // speed, 12)        # colours done before step t
      done = pos >= 12
      expected.append(-1 if done else pairs[pos // 2])
    np.testing.assert_array_equal(roll['controller'][e], expected)
    assert roll['success'][e] == (12 * speed <= env.max_steps)
  assert control_rollouts.controller_index(jnp.array([0, 1, 2, 7, 8, 11, 12]),
                              jnp.array(pairs), 2).tolist() == [
                                  0, 0, 1, 3, 0, 1, 1]


def test_sweep_end_to_end_and_resume(pretrained, monkeypatch):
  c, workdir, _ = pretrained
  summary = ctl.run(c, workdir)
  out = os.path.join(workdir, 'control')
  for name in ('depth_2/base.json', 'depth_2/layer_1.json',
               'depth_2/controllers_layer_1.msgpack', 'results.json',
               'success.csv', 'fig4_controllability.png',
               'success_by_layer.png'):
    assert os.path.exists(os.path.join(out, name)), name
  with open(os.path.join(out, 'depth_2', 'layer_1.json')) as f:
    r = json.load(f)
  assert 0.0 <= r['success'] <= 1.0
  assert r['base_success'] == summary['base_success']['2']
  assert r['heldout/controlled_action_nll'] < r['heldout/base_action_nll']
  assert summary['mid_layer'] == 1 and 'mid_layer_success' in summary
  assert os.path.exists(os.path.join(workdir, 'metrics', 'control.jsonl'))

  def fail(*a, **k):
    raise AssertionError('recomputed a finished layer')
  monkeypatch.setattr(ctl, 'train_controllers', fail)
  monkeypatch.setattr(ctl, 'evaluate_controllers', fail)
  assert ctl.run(c, workdir) == summary

  # Another post-training task: the trained controllers are scored on it,
  # not trained again.
  monkeypatch.setattr(ctl, 'evaluate_controllers',
                      control_rollouts.evaluate_controllers)
  other = c.copy_and_resolve_references()
  other.env.post_task = '2-3-4-5-6-7-0-1'
  ctl.run(other, workdir)
  with open(os.path.join(out, 'depth_2', 'layer_1.json')) as f:
    scored = json.load(f)
  assert scored['fingerprint']['env']['post_task'] == '2-3-4-5-6-7-0-1'
  assert scored['train_nll'] == r['train_nll']
  assert len(scored['pair_pass_rate']) == 4


def test_depth_variants_are_pretrained_in_their_own_workdir(tmp_path,
                                                            monkeypatch):
  c = _config()
  c.control.depth_pretrain_steps = 10
  calls = []

  def load_params(cfg, workdir):
    if not calls:
      raise FileNotFoundError('no finished pretraining run')
    return {'depth': cfg.model.num_layers}

  def train(cfg, workdir, run_eval=True):
    calls.append((cfg.model.num_layers, cfg.pretrain.num_steps, workdir,
                  run_eval))

  monkeypatch.setattr(pretrain, 'load_params', load_params)
  monkeypatch.setattr(pretrain, 'train', train)
  c.control.depths = (2, 3)
  # The analysis refuses a missing depth variant; the pipeline trains it.
  with pytest.raises(FileNotFoundError, match='experiments/controllability'):
    ctl.base_model_params(c, str(tmp_path), 3)
  assert not calls
  assert pipeline.pretrain_depth_variants(c, str(tmp_path)) == [
      os.path.join(str(tmp_path), 'depth_3')]
  assert calls == [(3, 10, os.path.join(str(tmp_path), 'depth_3'), False)]
  cfg, params = ctl.base_model_params(c, str(tmp_path), 3)
  assert params == {'depth': 3} and cfg.model.num_layers == 3
  assert c.model.num_layers == 2 and c.pretrain.num_steps == 20
  # Once pretrained, it is loaded, not trained again.
  pipeline.pretrain_depth_variants(c, str(tmp_path))
  assert len(calls) == 1


def test_missing_pretraining_says_what_to_run(tmp_path):
  with pytest.raises(FileNotFoundError, match='experiments/pretrain.py'):
    ctl.run(_config(), str(tmp_path))


@pytest.mark.parametrize('field,value,match', [
    ('num_steps', 0, r'config\.control\.num_steps=0'),
    ('num_steps', 15, r'config\.control\.num_steps.*log_every'),
    ('rank', -1, r'config\.control\.rank=-1'),
    ('rank', 64, r'config\.control\.rank.*model\.width=32'),
    ('weight_decay', -0.1, r'config\.control\.weight_decay'),
    ('temperature', 0.0, r'config\.control\.temperature'),
    ('depths', (), r'config\.control\.depths'),
    ('depths', (2, 0), r'config\.control\.depths\[1\]=0'),
    ('layers', (9,), r'config\.control\.layers\[0\]'),
    ('depth_pretrain_steps', 7, r'config\.control\.depth_pretrain_steps'),
])
def test_bad_control_fields_name_the_field(field, value, match):
  c = _config()
  c.control[field] = value
  with pytest.raises(ConfigError, match=match):
    config_lib.build(c)


def test_subgoal_controllers_equal_the_gathered_intervention():
  k_a, k_b, k_e, k_g = jax.random.split(jax.random.key(0), 4)
  a = jax.random.normal(k_a, (4, 8, 3))
  b = jax.random.normal(k_b, (4, 8, 3))
  e = jax.random.normal(k_e, (2, 5, 8))
  subgoal = jax.random.randint(k_g, (2, 5), -1, 4)
  fast = controllers.SubgoalControllers(2, a, b, subgoal)
  # One compiled function rather than many eager ops.
  both = jax.jit(lambda f, e: (f.apply(e), f.to_intervention().apply(e)))
  np.testing.assert_allclose(*both(fast, e), rtol=1e-5, atol=1e-5)
  assert fast.to_intervention().layer == 2


def test_pair_pass_rates():
  np.testing.assert_allclose(control_rollouts.pair_pass_rates([15, 51, 122, 44, 24]),
                             [241 / 256, 190 / 241, 68 / 190, 24 / 68])
  assert np.isnan(control_rollouts.pair_pass_rates([4, 0, 0])[1])


def test_failure_kinds_tell_the_prior_from_navigation():
  from irl.envs import tasks
  table = tasks.GRID_PRETRAIN_TASKS
  assert control_rollouts.seen_successors(table, 2) == {0: {2, 3}, 1: {0, 3}, 2: {0, 1},
                                           3: {1, 2}}
  task = [0, 1, 2, 3, 4, 5]
  visits = np.array([
      [0, 1, 2, 3, 4, 5, -1],    # success: not counted
      [0, 1, 4, -1, -1, -1, -1],   # after 0-1, colour 4: 4-5 follows 0-1
      [0, 1, 2, 3, 0, -1, -1],   # after 2-3, colour 0: 0-1 follows 2-3
      [0, 1, 7, -1, -1, -1, -1],   # after 0-1, colour 7: no pair starts there
      [0, 5, -1, -1, -1, -1, -1],  # between 0 and 1
      [3, -1, -1, -1, -1, -1, -1],  # a wrong first colour
      [0, 1, 2, -1, -1, -1, -1],   # no wrong colour: T ran out
  ])
  assert control_rollouts.failure_kinds(visits, task, table, 2) == {
      'start': 1, 'within_pair': 1, 'boundary_prior': 2, 'boundary_other': 1,
      'timeout': 1}
