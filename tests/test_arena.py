"""Ant-pinpad and its point body: the rules, the observation, jit and vmap."""

import functools
import json
import os

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl.envs import arena_pinpad as ap
from irl.envs import registry


def _params(body='point', **changes):
  env = registry.get(f'{body}_pinpad')
  return env.params_from_config(env.default_config()).replace(**changes)


POINT = _params()


@functools.lru_cache(maxsize=None)
def _jitted(params):
  return (jax.jit(lambda k, t=None: ap.reset(k, params, t)),
          jax.jit(lambda s, a: ap.step(s, a, params)))


def _at(state, xy):
  """The state with the body moved to `xy` (the cell follows)."""
  xy = jnp.asarray(xy, jnp.float32)
  return state.replace(xy=xy, cell=ap.cell_of(xy, POINT))


def _beside(state, cell, params=POINT):
  """A point 0.1 m outside `cell`, on the side of a neighbour inside the
  arena that holds no colour or wall, and the action that enters `cell`."""
  centre = ap.cell_centres(params)[cell]
  for direction in np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], np.float32):
    xy = centre + direction * (params.cell_size / 2 + 0.1)
    other = int(ap.cell_of(jnp.asarray(xy), params))
    if other >= 0 and int(state.grid[other]) == -1:
      return xy, -direction
  return None, None


def test_registered_with_the_papers_tasks_and_sizes():
  assert {'ant_pinpad', 'point_pinpad'} <= set(registry.names())
  ant = _params('ant')
  assert (ant.grid_size, ant.num_colours, ant.num_walls, ant.max_steps) == (
      4, 4, 1, 500)
  assert ant.obs_dim == 27 + 2 + 8 + 2 + 2 and ant.action_dim == 8
  assert POINT.obs_dim == 2 + 2 + 8 + 2 + 2 and POINT.action_dim == 2
  assert registry.get('ant_pinpad').post_task == (0, 1, 2, 3)
  with pytest.raises(FileNotFoundError, match='env.expert_checkpoint'):
    registry.get('point_pinpad').expert_rollout(jax.random.key(0), POINT,
                                                0.0, 10)
  with pytest.raises(ValueError, match='env.cell_size'):
    _params(cell_size=0.0).validate()


@hypothesis.settings(max_examples=8, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31 - 1))
def test_reset_places_everything_apart_and_the_observation_says_where(seed):
  reset, _ = _jitted(POINT)
  state, obs = reset(jax.random.key(seed))
  grid = np.asarray(state.grid)
  assert sorted(grid[grid >= 0]) == list(range(POINT.num_colours
                                               + POINT.num_walls))
  assert grid[int(state.cell)] == -1
  assert int(ap.cell_of(state.xy, POINT)) == int(state.cell)
  part = ap.observation_layout(POINT)
  assert part['local'].stop == obs.shape[0] == POINT.obs_dim
  decoded, xy = ap.decode_observation(np.asarray(obs), POINT)
  np.testing.assert_array_equal(decoded, grid)
  np.testing.assert_allclose(xy, state.xy, atol=1e-5)
  assert np.all(np.abs(obs[part['local']]) <= 1.0)


def test_entering_the_wall_cell_fails_at_once():
  reset, step = _jitted(POINT)
  for seed in range(20):
    state, _ = reset(jax.random.key(seed))
    wall = int(np.nonzero(np.asarray(state.grid) >= POINT.num_colours)[0][0])
    xy, action = _beside(state, wall)
    if xy is not None:
      break
  state, _, reward, done, info = step(_at(state, xy), jnp.asarray(action))
  assert bool(done) and bool(info['crash']) and bool(info['failure'])
  assert float(reward) == 0.0 and not bool(state.success)


def test_visits_advance_the_task_wrong_colours_fail_and_success_pays_once():
  one = _params(tasks=((2,),))
  reset, step = _jitted(one)
  for seed in range(20):
    state, _ = reset(jax.random.key(seed), 0)
    cells = np.asarray(state.colour_cell)
    (xy2, a2), (xy0, a0) = _beside(state, cells[2], one), _beside(
        state, cells[0], one)
    if xy2 is not None and xy0 is not None:
      break
  wrong, _, reward, done, info = step(_at(state, xy0), jnp.asarray(a0))
  assert bool(info['wrong_colour']) and bool(done) and float(reward) == 0
  state, _, reward, done, info = step(_at(state, xy2), jnp.asarray(a2))
  assert int(info['visited_colour']) == 2 and int(state.task_pos) == 1
  assert bool(done) and bool(info['success']) and float(reward) == 1.0
  frozen, _, reward, done, _ = step(state, jnp.asarray(a2))
  assert float(reward) == 0.0 and bool(done)
  np.testing.assert_array_equal(frozen.xy, state.xy)


def test_episode_times_out_at_T():
  short = _params(max_steps=5)
  reset, step = _jitted(short)
  state, _ = reset(jax.random.key(3))
  for t in range(5):
    state, _, _, done, info = step(state, jnp.zeros(2))
    assert bool(done) == (t == 4)
  assert bool(info['timeout']) and not bool(state.success)


@functools.lru_cache(maxsize=None)
def _rollout(params):
  """reset + steps, vmapped and jitted: (keys [B], actions [B, S, A]) ->
  (obs [B, S, D], reward, done)."""
  def one(key, acts):
    state, _ = ap.reset(key, params)

    def body(s, a):
      s, obs, reward, done, _ = ap.step(s, a, params)
      return s, (obs, reward, done)
    return jax.lax.scan(body, state, acts)[1]
  return jax.jit(jax.vmap(one))


@pytest.mark.parametrize('body,steps', [('point', 12), ('ant', 3)])
def test_jit_and_vmap_equal_a_python_loop_and_are_deterministic(body, steps):
  params = POINT if body == 'point' else _params('ant')
  keys = jax.random.split(jax.random.key(7), 2)
  actions = jax.random.uniform(jax.random.key(8),
                               (2, steps, params.action_dim), minval=-1)
  batched = _rollout(params)(keys, actions)
  # The episodes in the other order: each depends on its own key only, and
  # is the same again.
  swapped = _rollout(params)(keys[::-1], actions[::-1])
  for x, y in zip(batched, swapped):
    np.testing.assert_array_equal(x, y[::-1])
  reset, step = _jitted(params)
  for b in range(2):
    state, _ = reset(keys[b])
    for t in range(steps):
      state, obs, reward, done, _ = step(state, actions[b, t])
      np.testing.assert_allclose(obs, batched[0][b, t], rtol=1e-4, atol=1e-4)
      assert float(reward) == float(batched[1][b, t])
      assert bool(done) == bool(batched[2][b, t])


def test_the_ant_starts_upright_and_fails_when_its_torso_leaves_the_band():
  ant = _params('ant')
  reset, step = _jitted(ant)
  state, obs = reset(jax.random.key(0))
  assert obs.shape == (ant.obs_dim,)
  assert ap.ANT_HEIGHT_RANGE[0] < float(state.physics.qpos[2]) < (
      ap.ANT_HEIGHT_RANGE[1])
  # Lifted to 1.5 m, it is still above the band after one 0.05 s step.
  high = state.replace(physics=state.physics.replace(
      qpos=state.physics.qpos.at[2].set(1.5)))
  _, _, reward, done, info = step(high, jnp.zeros(8))
  assert bool(done) and bool(info['crash']) and float(reward) == 0.0


def test_the_ants_model_first_built_under_pmap_carries_no_mesh():
  # Brax's PPO first resets inside pmap: arrays MuJoCo's model made there
  # carried pmap's manual mesh into the cache, and the expert's evaluation
  # under jit then refused to mix them with its own.
  ap.ant_model.cache_clear()
  ant = _params('ant')
  keys = jax.random.split(jax.random.PRNGKey(1), 2).reshape(1, 2, -1)
  obs = jax.pmap(jax.vmap(lambda k: ap.reset(k, ant)[1]), axis_name='i')(keys)
  assert obs.shape == (1, 2, ant.obs_dim)
  for leaf in jax.tree.leaves(ap.ant_model()[0]):
    if isinstance(leaf, jax.Array):
      assert not leaf.aval.sharding.mesh.axis_names, leaf.aval.sharding


def test_expert_observation_points_along_a_shortest_path():
  from irl.envs import arena_expert
  env = arena_expert.ExpertEnv(POINT)
  state = env.reset(jax.random.key(4))
  assert state.obs.shape == (env.observation_size,)
  field = np.asarray(state.obs[POINT.obs_dim:]).reshape(-1, 4)
  here, field = field[-1], field[:-1]
  arena = state.pipeline_state.arena
  target = int(arena.task[0])
  # Every free cell next to the target points into it; the wall cell has no
  # move.
  from irl.envs import gridworld_pinpad
  nbr = gridworld_pinpad.neighbour_table(POINT.grid_size)
  goal = int(arena.colour_cell[target])
  grid = np.asarray(arena.grid)
  for cell in set(nbr[goal]) - {goal}:
    if grid[cell] == -1:
      assert nbr[cell, field[cell].argmax()] == goal
  wall = int(np.nonzero(grid >= POINT.num_colours)[0][0])
  assert field[wall].sum() == 0 and field.sum(-1).max() == 1.0
  np.testing.assert_array_equal(here, field[int(arena.cell)])


@pytest.fixture(scope='module')
def expert_workdir(tmp_path_factory):
  """A workdir holding the `test` preset's expert (trained once), and its
  summary."""
  from configs import ant
  from irl import config as config_lib
  from irl.train import arena_expert
  workdir = str(tmp_path_factory.mktemp('point'))
  config = config_lib.locate(ant.get_config('test'), workdir)
  return workdir, config, arena_expert.train(config, workdir)


def test_the_expert_trains_with_brax_ppo_and_reports_its_success(
    expert_workdir):
  from irl.train import arena_expert
  workdir, config, summary = expert_workdir
  assert 0.0 <= summary['success_pretrain'] <= 1.0
  assert 0.0 <= summary['success_post'] <= 1.0
  assert config.env.expert_checkpoint.startswith(workdir)
  assert os.path.exists(os.path.join(workdir, 'checkpoints',
                                     'expert.msgpack'))
  assert arena_expert.train(config, workdir) == summary     # loaded


def test_the_experts_data_d_samples_and_d_star_takes_the_mean(
    expert_workdir):
  from irl import config as config_lib
  from irl.data import stream
  _, config, _ = expert_workdir
  params = config_lib.env_params(config)
  env = registry.from_config(config)
  sample = lambda eps: stream.make_expert_stream(
      env, params, 8, params.max_steps, epsilons=(eps,))(jax.random.key(3))
  mean, sampled = sample(0.0), sample(1.0)
  for r in (mean, sampled):
    assert r.actions.shape == (8, params.max_steps, 2)
    assert r.actions.dtype == jnp.float32
    assert np.all(np.abs(np.asarray(r.actions)) <= 1.0)
    valid = np.asarray(r.valid)
    # Valid steps are a prefix; the next observation is the one that follows.
    np.testing.assert_array_equal(valid.sum(1), r.length)
    assert np.all(valid[:, :-1] >= valid[:, 1:])
    np.testing.assert_allclose(np.asarray(r.obs[:, 1:])[valid[:, 1:]],
                               np.asarray(r.next_obs[:, :-1])[valid[:, 1:]])
    assert np.all(np.asarray(r.subgoal)[~valid] == -1)
    np.testing.assert_array_equal(np.asarray(r.reward).sum(1), r.success)
  # Same keys, same layouts and tasks: only the actions' noise differs.
  np.testing.assert_array_equal(mean.obs[:, 0], sampled.obs[:, 0])
  assert not np.allclose(mean.actions[:, 0], sampled.actions[:, 0])
  np.testing.assert_array_equal(mean.actions, sample(0.0).actions)


def test_the_base_model_learns_the_experts_continuous_actions(
    expert_workdir):
  """A few steps of pretraining (Hawk, Gaussian head, MSE next
  observation) lower the held-out action NLL of D*."""
  from irl import config as config_lib
  from irl.data import stream
  from irl.train import evaluate, pretrain
  _, config, _ = expert_workdir
  config = config_lib.replace(config, {'pretrain.num_steps': 40})
  trainer = pretrain.make_pretrainer(config)
  assert trainer.model.config.backbone == 'hawk'
  assert trainer.model.config.action_type == 'continuous'
  held_out = stream.stream_from_config(config, 'expert', batch_size=16,
                                       jit=False)
  nll = lambda p: evaluate.action_prediction(
      trainer.model, p, held_out, jax.random.key(9), 1)['action_nll']
  state = trainer.init(jax.random.key(0))
  before = nll(state.params)
  for _ in range(4):
    state, metrics = trainer.train_chunk(state)
  assert np.isfinite(float(metrics['obs_nll']))
  assert nll(state.params) < before - 0.2


def test_a_workdir_locates_the_expert_and_fingerprints_ignore_where(
    tmp_path):
  from configs import ant
  from irl import config as config_lib
  from irl.utils import config_utils
  a = config_lib.locate(ant.get_config('test'), str(tmp_path / 'a'))
  b = config_lib.locate(ant.get_config('test'), str(tmp_path / 'b'))
  assert a.env.expert_checkpoint == str(tmp_path / 'a' / 'checkpoints' /
                                        'expert.msgpack')
  assert config_lib.locate(a, str(tmp_path / 'b')) == a    # set: kept
  assert (config_utils.config_fingerprint(a, ['env']) ==
          config_utils.config_fingerprint(b, ['env']))


def test_an_expert_trained_under_other_settings_is_refused_not_replaced(
    tmp_path):
  """Every phase in a workdir learned from its expert's data, so a config
  whose `env` or `expert` differs from the expert's is refused by every
  entry point (locate) and by the expert's training, naming the field, and
  the files stay as they were."""
  from configs import ant
  from irl import config as config_lib
  from irl.train import arena_expert
  from irl.utils.checkpoint import CheckpointMismatchError
  workdir = str(tmp_path)
  config = config_lib.locate(ant.get_config('test'), workdir)
  # A stand-in for a trained expert: its summary's fingerprint is what is
  # checked, and the post-task rate is stored, so nothing loads the policy.
  policy_path = config_lib.expert_path(workdir)
  summary_path = config_lib.expert_summary_path(workdir)
  for path in (policy_path, summary_path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(policy_path, 'wb') as f:
    f.write(b'policy')

  def write_summary(policy_format):
    summary = {'fingerprint': {**config_lib.expert_fingerprint(config),
                               'policy_format': policy_format},
               'success_pretrain': 0.5,
               'success_by_post_task': {config.env.post_task: 0.25}}
    with open(summary_path, 'w') as f:
      json.dump(summary, f)

  write_summary(arena_expert.POLICY_FORMAT)
  assert arena_expert.train(config, workdir)['success_post'] == 0.25
  other = ant.get_config('test')
  other.expert.num_timesteps = 512
  message = 'expert.num_timesteps: checkpoint=256, config=512'
  with pytest.raises(CheckpointMismatchError, match=message):
    config_lib.locate(other, workdir)
  with pytest.raises(CheckpointMismatchError, match=message):
    arena_expert.train(other, workdir)
  other = ant.get_config('test')
  other.env.max_steps = 30
  with pytest.raises(CheckpointMismatchError, match='env.max_steps'):
    config_lib.locate(other, workdir)
  with pytest.raises(CheckpointMismatchError, match='env.max_steps'):
    arena_expert.train(other, workdir)
  # Naming the workdir's expert explicitly does not skip the check.
  other.env.expert_checkpoint = policy_path
  with pytest.raises(CheckpointMismatchError, match='env.max_steps'):
    config_lib.locate(other, workdir)
  # Another post-training task reuses the expert (it is only evaluated).
  other = ant.get_config('test')
  other.env.post_task = '1-2-3'
  assert config_lib.locate(other, workdir).env.expert_checkpoint == policy_path
  # A policy file of an older layout is refused too, not retrained.
  write_summary(arena_expert.POLICY_FORMAT - 1)
  with pytest.raises(CheckpointMismatchError, match='policy_format'):
    arena_expert.train(config, workdir)
  with open(summary_path) as f:
    summary = f.read()
  # A policy whose summary is missing has an unknown config: refused too.
  os.remove(summary_path)
  with pytest.raises(CheckpointMismatchError, match='no summary'):
    arena_expert.train(config, workdir)
  with open(policy_path, 'rb') as f:
    assert f.read() == b'policy'
  assert json.loads(summary)['fingerprint']['policy_format'] == (
      arena_expert.POLICY_FORMAT - 1)      # the refusals wrote nothing


@pytest.mark.parametrize('preset', ['paper', 'cpu', 'test'])
def test_ant_presets_build(preset):
  from configs import ant
  from irl import config as config_lib
  c = config_lib.build(ant.get_config(preset))
  assert c.env.name == ('ant_pinpad' if preset == 'paper' else 'point_pinpad')
  assert config_lib.env_params(c).body == ('ant' if preset == 'paper'
                                           else 'point')


def test_the_first_unseen_transition_of_each_post_task():
  from configs import ant, gridworld
  from irl.analysis import code_injection
  from irl import config as config_lib
  # The ant's 0-1-2-3: 0 -> 1 never follows in pretraining; the grid's
  # pairs 0-1-2-3-0-1 begin with the unseen 01 -> 23.
  assert code_injection.first_unseen_transition(
      config_lib.build(ant.get_config('test'))) == 1
  assert code_injection.first_unseen_transition(
      config_lib.build(gridworld.get_config('test'))) == 1


def test_code_index_follows_the_pursued_subgoal():
  import jax.numpy as jnp
  from irl.analysis.code_injection import code_index
  # Pairs (size 2) of 0-1-2-3-4-5-6-7, and a -1-padded one-pair task.
  task = jnp.array([[0, 1, 2, 3, 4, 5, 6, 7]] * 6 + [[2, 3, -1, -1, -1, -1,
                                                      -1, -1]])
  task_len = jnp.array([8] * 6 + [2])
  pos = jnp.array([0, 1, 2, 5, 7, 8, 2])   # 8 and (2 of 2): the task is done
  none = 9
  idx = lambda mode, position=0: code_index(mode, task, pos, task_len, 2,
                                            position, none).tolist()
  assert idx('compose') == [0, 0, 1, 2, 3, 3, 1]
  # Forcing runs on the post-training task, whose subgoal 1 exists.
  assert idx('force', 1)[:6] == [none, none, 1, none, none, none]
  assert idx('target') == [0] * 6 + [1]


def test_transition_names_use_the_task_colours():
  from irl.analysis.code_injection import transition_name
  assert transition_name((0, 1, 2, 3), 1, 1) == '0->1'
  assert transition_name((0, 1, 2, 3, 4, 5, 6, 7), 2, 1) == '01->23'
  assert transition_name((1, 0, 3, 2), 2, 1) == '10->32'


def test_the_test_preset_ant_pipeline_runs_end_to_end():
  """Every phase on the arena, the expert's included, through the README's
  command: the report shows the expert, the paths, code transfer and Fig. 8.
  A subprocess, as a user runs it, started when the suite was collected
  (tests/background.py)."""
  import background
  from configs import ant
  from irl.analysis import code_injection, report
  run = background.ant_pipeline()
  run.wait()
  workdir = run.workdir
  config = ant.get_config('test')
  results = report.load_markers(workdir)
  assert list(results) == list(report.PHASES)
  for figure in ('expert/trajectories.png', 'eval/trajectories.png'):
    assert os.path.exists(os.path.join(workdir, figure)), figure
  injection = results['code_injection']['summary']
  assert set(map(int, injection['reach_subgoal'])) == {0, 1, 2, 3}
  assert injection['force']['transition'] == '0->1'
  for r in [*injection['reach_subgoal'].values(), injection['force']]:
    assert 0.0 <= r['none'] <= 1.0 and 0.0 <= r['code'] <= 1.0
  compose = injection['compose']
  assert sorted(compose) == sorted(['post_task', 'none'] + [
      f'x{s:g}' for s in code_injection.COMPOSE_SCALES])
  assert all(0.0 <= compose[f'x{s:g}'] <= 1.0
             for s in code_injection.COMPOSE_SCALES)
  assert 0.0 <= compose['none'] <= 1.0
  fig8 = results['internal_rl']['summary']
  assert sorted(fig8['methods']) == sorted(config.rl.fig8_methods)
  with open(os.path.join(workdir, 'REPORT.md')) as f:
    report = f.read()
  for heading in ('## The expert', '## Code transfer', '(Fig. 8)',
                  "each subgoal's code while it is pursued",
                  'expert/trajectories.png', 'eval/trajectories.png'):
    assert heading in report, heading
