"""The shortest-path expert and the expert data stream."""

import collections

import jax
import numpy as np
import pytest

from irl.envs import gridworld_expert as expert
from irl.data import stream
from irl.envs import gridworld_pinpad as gw
from irl.envs import registry
from irl.envs import tasks

GRID = registry.get('gridworld_pinpad')
PARAMS = gw.EnvParams().validate()
POST = PARAMS.replace_tasks([tasks.GRID_POST_TASK])


@pytest.fixture(scope='module')
def pretrain_batch():
  sample = stream.make_expert_stream(GRID, PARAMS, 512, 100, (0.0,))
  return jax.device_get(sample(jax.random.key(0)))


@pytest.fixture(scope='module')
def post_batch():
  sample = stream.make_expert_stream(GRID, POST, 512, 100, (0.0,))
  return jax.device_get(sample(jax.random.key(1)))


@pytest.fixture(scope='module')
def noisy_batch():
  sample = stream.make_expert_stream(GRID, PARAMS, 256, 100, (0.1, 0.2))
  return jax.device_get(sample(jax.random.key(2)))


def test_expert_solves_pretraining_tasks(pretrain_batch):
  assert pretrain_batch.success.mean() >= 0.99
  assert set(pretrain_batch.task_id.tolist()) == set(range(16))


def test_expert_solves_post_training_task(post_batch):
  # Timeouts (T = 100) on long layouts are the only failures.
  assert post_batch.success.mean() >= 0.99
  assert (post_batch.length[~post_batch.success] == 100).all()


def test_epsilon_zero_takes_only_optimal_moves(pretrain_batch):
  b = pretrain_batch
  taken = np.take_along_axis(b.optimal, b.actions[..., None], -1)[..., 0]
  assert taken[b.valid].all()
  # The ceiling of next-action accuracy is below 1: ties between moves exist.
  assert (b.optimal.sum(-1)[b.valid] > 1).mean() > 0.1


def test_noisy_expert_never_enters_a_wrong_colour(noisy_batch):
  b = noisy_batch
  table, _ = gw.tasks_array(PARAMS)
  for i in range(len(b.task_id)):
    visits = b.visits[i][b.visits[i] >= 0]
    np.testing.assert_array_equal(visits, table[b.task_id[i]][:len(visits)])
    if not b.success[i]:
      assert b.length[i] == 100
  # The noise is real: some moves are not optimal.
  taken = np.take_along_axis(b.optimal, b.actions[..., None], -1)[..., 0]
  assert (~taken[b.valid]).mean() > 0.02


def test_rollout_fields_are_consistent(pretrain_batch):
  b = pretrain_batch
  steps = np.arange(b.valid.shape[1])
  np.testing.assert_array_equal(b.valid, steps[None] < b.length[:, None])
  for i in range(32):
    n = b.length[i]
    np.testing.assert_array_equal(b.next_obs[i, :n - 1], b.obs[i, 1:n])
    task = np.array(PARAMS.tasks[b.task_id[i]])
    pos = b.task_pos[i, :n]
    np.testing.assert_array_equal(b.subgoal[i, :n], task[pos] // 2)
    np.testing.assert_array_equal(b.subgoal_index[i, :n], pos // 2)
    assert (b.subgoal[i, n:] == -1).all()
    assert b.reward[i].sum() == float(b.success[i])
    # Agent one-hot of o_{t+1} is where action a_t leads (or stays).
    agent = b.obs[i, :n].reshape(n, 49, 13)[:, :, -1].argmax(-1)
    nxt = b.next_obs[i, :n].reshape(n, 49, 13)[:, :, -1].argmax(-1)
    dest = gw.neighbour_table(7)[agent, b.actions[i, :n]]
    assert ((nxt == dest) | (nxt == agent)).all()


def test_distance_fields_match_numpy_bfs():
  layouts = gw.sample_layout_pool(jax.random.key(3), PARAMS, 16)
  dist = jax.device_get(jax.jit(jax.vmap(
      lambda l: expert.distance_fields(l.grid, l.colour_cell, PARAMS)))(layouts))
  nbr = gw.neighbour_table(7)
  for i in range(16):
    grid = np.asarray(layouts.grid[i])
    for c, cell in enumerate(np.asarray(layouts.colour_cell[i])):
      want = np.full(49, expert.UNREACHABLE)
      want[cell] = 0
      queue = collections.deque([cell])
      while queue:
        p = queue.popleft()
        for q in nbr[p]:
          if grid[q] == gw.EMPTY and want[q] == expert.UNREACHABLE:
            want[q] = want[p] + 1
            queue.append(q)
      np.testing.assert_array_equal(dist[i, c], want)


def test_stream_is_deterministic_and_uses_the_mix():
  sample = stream.make_expert_stream(GRID, PARAMS, 64, 40, (0.0, 0.2), task_ids=(3, 5))
  a, b = sample(jax.random.key(9)), sample(jax.random.key(9))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert set(np.asarray(a.task_id).tolist()) == {3, 5}
  assert set(np.asarray(a.epsilon).tolist()) == {0.0, np.float32(0.2)}


@pytest.mark.parametrize('kwargs,match', [
    (dict(seq_len=101), 'seq_len'),
    (dict(epsilons=(0.0, 1.5)), 'ε must be in'),
    (dict(task_ids=(16,)), 'task_ids'),
    (dict(batch_size=0), 'batch_size'),
    (dict(episodes_per_row=0), 'episodes_per_row'),
])
def test_stream_rejects_bad_arguments(kwargs, match):
  args = dict(batch_size=4, seq_len=10, epsilons=(0.0,))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    stream.make_expert_stream(GRID, PARAMS, **args)


def test_packed_rows_hold_whole_episodes_back_to_back():
  # Three episodes of 40 steps packed into one 40-step row: the first whole,
  # the next from where it ended, the rest cut at the row's end.
  seq_len, k = 40, 3
  episodes = stream.make_expert_stream(GRID, PARAMS, k, seq_len, (0.0, 0.2))(
      jax.random.key(3))
  row = jax.device_get(stream.pack_episodes(episodes))
  episodes = jax.device_get(episodes)
  lengths = episodes.length
  start = 0
  for i in range(k):
    n = int(min(lengths[i], max(seq_len - start, 0)))
    where = np.nonzero(row.segment == i)[0]
    if n:
      np.testing.assert_array_equal(where[:n], np.arange(start, start + n))
    for field in ('obs', 'next_obs', 'actions', 'valid'):
      np.testing.assert_array_equal(getattr(row, field)[start:start + n],
                                    getattr(episodes, field)[i, :n])
    start += n
  assert row.valid.sum() == min(lengths.sum(), seq_len)
  assert np.all(np.diff(row.segment) >= 0)
  assert row.episodes == min(k, 1 + np.searchsorted(np.cumsum(lengths),
                                                    seq_len - 1, 'right'))


def test_packed_stream_fills_rows():
  plain = stream.make_expert_stream(GRID, PARAMS, 64, 48, (0.0, 0.2))
  packed = stream.make_expert_stream(GRID, PARAMS, 64, 48, (0.0, 0.2),
                                     episodes_per_row=2)
  a, b = plain(jax.random.key(4)), packed(jax.random.key(4))
  assert isinstance(b, stream.PackedRollout) and b.obs.shape == a.obs.shape
  # Expert episodes last ~35 steps: a second one fills the padding.
  assert float(a.valid.mean()) < 0.85 < 0.97 < float(b.valid.mean())
  assert 1.5 < float(b.episodes.mean()) <= 2
