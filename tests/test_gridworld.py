"""Invariants of gridworld-pinpad, its auto-reset and its renderer."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from irl.envs import gridworld_autoreset
from irl.envs import gridworld_pinpad as gw
from irl.envs import gridworld_render
from irl.envs import tasks

PARAMS = gw.EnvParams().validate()
G, O, W, N = 7, 8, 4, 49
HORIZON = 110  # > T, so every random episode reaches done


@functools.partial(jax.jit, static_argnums=2)
def random_episode(key, actions, params=PARAMS):
  """Scan `actions` from a reset; records everything the tests inspect."""
  state, obs = gw.reset(key, params)

  def body(carry, action):
    state, obs = carry
    new, new_obs, reward, done, info = gw.step(state, action, params)
    rec = dict(agent=state.agent, new_agent=new.agent, obs=obs,
               new_obs=new_obs, reward=reward, done=done,
               was_done=state.done, time=new.time, **info)
    return (new, new_obs), rec

  (final, _), traj = jax.lax.scan(body, (state, obs), actions)
  return state, final, traj


def _wall_and_colour_cells(grid):
  grid = np.asarray(grid)
  return set(np.nonzero(grid >= O)[0]), set(np.nonzero((grid >= 0) & (grid < O))[0])


seeds = st.integers(0, 2**31 - 1)
action_seqs = st.lists(st.integers(0, 3), min_size=HORIZON, max_size=HORIZON)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, actions=action_seqs)
def test_observation_is_one_hot_layout(seed, actions):
  start, _, traj = random_episode(jax.random.key(seed), jnp.array(actions))
  obs = np.asarray(traj['obs']).reshape(HORIZON, N, O + W + 1)
  assert set(np.unique(obs)) <= {0.0, 1.0}
  # Each colour and each wall on exactly one cell; at most one object a cell.
  np.testing.assert_array_equal(obs[:, :, :O + W].sum(1), 1)
  assert (obs[:, :, :O + W].sum(2) <= 1).all()
  # Exactly one agent, on the cell the state says, never on a wall.
  np.testing.assert_array_equal(obs[:, :, -1].sum(1), 1)
  np.testing.assert_array_equal(obs[:, :, -1].argmax(1), traj['agent'])
  walls, _ = _wall_and_colour_cells(start.grid)
  assert not walls & set(np.asarray(traj['new_agent']).tolist())
  # The layout part never changes within an episode.
  assert (obs[:, :, :O + W] == obs[:1, :, :O + W]).all()


@settings(max_examples=25, deadline=None)
@given(seed=seeds, actions=action_seqs)
def test_moves_and_visits(seed, actions):
  start, final, traj = random_episode(jax.random.key(seed), jnp.array(actions))
  walls, colours = _wall_and_colour_cells(start.grid)
  nbr = gw.neighbour_table(G)
  grid = np.asarray(start.grid)
  for t, a in enumerate(actions):
    if traj['was_done'][t]:
      # A finished episode is frozen: no reward, no movement, still done.
      assert traj['reward'][t] == 0 and traj['done'][t]
      assert traj['new_agent'][t] == traj['agent'][t]
      continue
    src, dst = int(traj['agent'][t]), int(nbr[traj['agent'][t], a])
    if dst == src or dst in walls:  # off the grid or into a wall: no-op
      assert traj['new_agent'][t] == src
      assert not traj['is_visit'][t]
    else:
      assert traj['new_agent'][t] == dst
      assert bool(traj['is_visit'][t]) == (dst in colours)
      if dst in colours:
        assert traj['visited_colour'][t] == grid[dst]
    if traj['wrong_colour'][t]:
      assert traj['done'][t] and traj['reward'][t] == 0
      assert traj['failure'][t]
  # Reward 1 exactly once iff the task was completed; done by T at the latest.
  assert traj['reward'].sum() == float(final.success)
  assert final.done
  first_done = int(np.argmax(np.asarray(traj['done'])))
  assert first_done < PARAMS.max_steps
  if traj['timeout'].any():
    assert int(np.argmax(np.asarray(traj['timeout']))) == PARAMS.max_steps - 1


def test_success_gives_reward_once_scripted():
  # Agent at (0,0); colour 0 at (0,1); colour 1 at (0,2); task 0-1.
  params = gw.EnvParams(tasks=((0, 1),)).validate()
  grid = np.full(N, gw.EMPTY, np.int32)
  colour_cell = np.array([1, 2, 20, 21, 22, 23, 24, 25], np.int32)
  grid[colour_cell] = np.arange(O)
  grid[[40, 41, 42, 43]] = O + np.arange(W)
  layout = gw.Layout(grid=jnp.array(grid), colour_cell=jnp.array(colour_cell),
                     agent_cell=jnp.int32(0))
  state = gw.init_state(jax.random.key(0), layout, jnp.array([0, 1]),
                        jnp.int32(2), jnp.int32(0), params)
  step = jax.jit(gw.step, static_argnums=2)
  rewards, dones = [], []
  for a in (gw.RIGHT, gw.RIGHT, gw.DOWN, gw.UP):
    state, _, r, d, info = step(state, a, params)
    rewards.append(float(r)); dones.append(bool(d))
  assert rewards == [0.0, 1.0, 0.0, 0.0]
  assert dones == [False, True, True, True]
  assert bool(state.success) and int(state.task_pos) == 2
  np.testing.assert_array_equal(np.asarray(state.visits[:3]), [0, 1, -1])


def test_wrong_colour_recorded_without_termination_in_free_mode():
  params = gw.EnvParams(tasks=((0, 1),), terminate_on_wrong_colour=False,
                        max_visits=3).validate()
  grid = np.full(N, gw.EMPTY, np.int32)
  colour_cell = np.array([1, 2, 20, 21, 22, 23, 24, 25], np.int32)
  grid[colour_cell] = np.arange(O)
  grid[[40, 41, 42, 43]] = O + np.arange(W)
  layout = gw.Layout(grid=jnp.array(grid), colour_cell=jnp.array(colour_cell),
                     agent_cell=jnp.int32(3))
  state = gw.init_state(jax.random.key(0), layout, jnp.array([0, 1]),
                        jnp.int32(2), jnp.int32(0), params)
  # Enter colour 1 (wrong), leave, enter again, leave, enter colour 0.
  done = []
  for a in (gw.LEFT, gw.RIGHT, gw.LEFT, gw.LEFT):
    state, _, r, d, info = gw.step(state, a, params)
    done.append(bool(d))
    assert float(r) == 0.0
  np.testing.assert_array_equal(np.asarray(state.visits), [1, 1, 0])
  # The log (max_visits=3) is full after the third visit: the episode ends.
  assert done == [False, False, False, True]


def test_solvability_matches_numpy_bfs():
  keys = jax.random.split(jax.random.key(3), 300)
  layouts = jax.jit(jax.vmap(lambda k: gw._draw_layout(k, PARAMS)))(keys)
  ok = np.asarray(jax.jit(jax.vmap(
      lambda l: gw.layout_is_solvable(l, PARAMS)))(layouts))
  nbr = gw.neighbour_table(G)

  def numpy_ok(grid, colour_cell, agent):
    seen, stack = {agent}, [agent]
    while stack:
      for q in nbr[stack.pop()]:
        if grid[q] == gw.EMPTY and q not in seen:
          seen.add(q); stack.append(q)
    return all(any(q in seen for q in nbr[c]) for c in colour_cell)

  expected = [numpy_ok(np.asarray(layouts.grid[i]),
                       np.asarray(layouts.colour_cell[i]),
                       int(layouts.agent_cell[i])) for i in range(300)]
  np.testing.assert_array_equal(ok, expected)
  assert 0.6 < np.mean(expected) < 0.95  # rejection is needed, and cheap
  sampled = gw.sample_layout_pool(jax.random.key(4), PARAMS, 64)
  assert np.asarray(jax.jit(jax.vmap(
      lambda l: gw.layout_is_solvable(l, PARAMS)))(sampled)).all()


def test_reset_distribution_covers_tasks_and_cells():
  states, _ = jax.jit(jax.vmap(lambda k: gw.reset(k, PARAMS)))(
      jax.random.split(jax.random.key(1), 512))
  assert set(np.asarray(states.task_id).tolist()) == set(range(16))
  assert len(set(np.asarray(states.agent).tolist())) > 40
  table, _ = gw.tasks_array(PARAMS)
  np.testing.assert_array_equal(np.asarray(states.task),
                                table[np.asarray(states.task_id)])


def test_deterministic_given_key():
  actions = jnp.asarray(np.random.default_rng(0).integers(0, 4, HORIZON))
  a = random_episode(jax.random.key(7), actions)
  b = random_episode(jax.random.key(7), actions)
  raw = lambda x: (jax.random.key_data(x)
                   if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(raw(x), raw(y)), a, b)


def test_scan_vmap_equals_python_loop():
  keys = jax.random.split(jax.random.key(11), 2)
  actions = jnp.asarray(np.random.default_rng(1).integers(0, 4, (2, HORIZON)))
  _, _, traj = jax.vmap(random_episode)(keys, actions)
  traj = jax.device_get(traj)
  step = jax.jit(gw.step, static_argnums=2)
  for i in range(2):
    state, obs = gw.reset(keys[i], PARAMS)
    for t in range(HORIZON):
      np.testing.assert_array_equal(obs, traj['obs'][i, t])
      state, obs, r, d, _ = step(state, actions[i, t], PARAMS)
      assert float(r) == float(traj['reward'][i, t])
      assert bool(d) == bool(traj['done'][i, t])
      assert int(state.agent) == int(traj['new_agent'][i, t])


def test_threefry_block_matches_jax():
  import jax.extend.random as jer  # pylint: disable=g-import-not-at-top
  keys = jax.random.key_data(jax.random.split(jax.random.key(3), 64))
  counters = jnp.arange(64, dtype=jnp.uint32) * jnp.uint32(0x9E3779B9)
  ours = jax.jit(jax.vmap(gridworld_autoreset.threefry2x32_block))(keys, counters)
  theirs = jax.vmap(lambda k, c: jnp.stack(jer.threefry_2x32(
      k, jnp.stack([c, jnp.uint32(0)]))))(keys, counters)
  np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize('use_pool', [False, True])
def test_auto_reset_starts_fresh_episodes(use_pool):
  pool = gw.sample_layout_pool(jax.random.key(0), PARAMS, 32) if use_pool else None
  env = gridworld_autoreset.AutoReset(PARAMS, pool)

  @jax.jit
  def run(key):
    state, obs = env.reset(key)

    def body(carry, k):
      state, obs = carry
      a = jax.random.randint(k, (), 0, 4)
      new, new_obs, r, d, _ = env.step(state, a)
      return (new, new_obs), (d, new.time, new_obs,
                              gw.observe(new.grid, new.agent, PARAMS),
                              gw.layout_is_solvable(
                                  gw.Layout(new.grid, new.colour_cell,
                                            new.agent), PARAMS) | (new.time > 0),
                              new.episode, new.grid)
    return jax.lax.scan(body, (state, obs), jax.random.split(key, 300))[1]

  done, time, obs, expected_obs, solvable, episode, grid = run(
      jax.random.key(5))
  assert done.sum() >= 3
  # The draw counter counts the resets, and the resets draw new layouts:
  # all distinct without a pool; with a 32-layout pool, about as many as
  # uniform draws with replacement give (expected 17.5 of 25).
  np.testing.assert_array_equal(episode, np.cumsum(done))
  fresh_grids = np.asarray(grid)[np.asarray(done)]
  distinct = len({g.tobytes() for g in fresh_grids})
  if use_pool:
    assert distinct >= len(fresh_grids) // 2
  else:
    assert distinct == len(fresh_grids)
  np.testing.assert_array_equal(np.asarray(time)[np.asarray(done)], 0)
  np.testing.assert_array_equal(obs, expected_obs)
  assert np.asarray(solvable).all()


def test_render_shows_layout_and_agent():
  state, _ = gw.reset(jax.random.key(0), PARAMS)
  img = gridworld_render.render(state, PARAMS, cell_px=10)
  assert img.shape == (70, 70, 3) and img.dtype == np.uint8
  r, c = divmod(int(state.agent), G)
  np.testing.assert_array_equal(img[r * 10 + 5, c * 10 + 5],
                                gridworld_render.AGENT_RGB)
  colour0 = int(state.colour_cell[0])
  r, c = divmod(colour0, G)
  np.testing.assert_array_equal(img[r * 10 + 5, c * 10 + 5],
                                gridworld_render.PALETTE[0])


def test_task_tables():
  assert len(tasks.GRID_PRETRAIN_TASKS) == 16
  assert all(len(t) == 6 for t in tasks.GRID_PRETRAIN_TASKS)
  assert len(tasks.GRID_POST_TASK) == 12
  seen = set().union(*(tasks.subgoal_transitions(t, 2)
                       for t in tasks.GRID_PRETRAIN_TASKS))
  post = tasks.subgoal_transitions(tasks.GRID_POST_TASK, 2)
  # docs/method.md: 01->23, 23->45, 45->67, 67->01 never occur in pretraining.
  assert post == {(0, 1), (1, 2), (2, 3), (3, 0)} and not post & seen
  ant_seen = set().union(*(tasks.subgoal_transitions(t, 1)
                           for t in tasks.ANT_PRETRAIN_TASKS))
  assert not tasks.subgoal_transitions(tasks.ANT_POST_TASK, 1) & ant_seen


@pytest.mark.parametrize('field,value,match', [
    ('grid_size', 3, 'grid_size'),
    ('max_steps', 0, 'max_steps'),
    ('tasks', ((0, 1, 8),), r'tasks\[0\].*\[0, 7\]'),
    ('tasks', ((0, 0),), 'cannot follow itself'),
    ('num_colours', 0, 'num_colours'),
])
def test_params_validation_names_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    gw.EnvParams(**{field: value}).validate()
