"""Linear probes: learn a linearly encoded label, stay at chance on noise;
the job probes every kept checkpoint, resumes, and fails clearly without one."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gridworld
from irl import config as config_lib
from irl.analysis import fig3
from irl.analysis import probes
from irl.train import pretrain
from irl.utils.config_utils import ConfigError


def _config():
  c = gridworld.get_config('test')
  c.pretrain.num_steps = 20      # checkpoints at steps 10 and 20
  return c


def _synthetic(data_key, config, signal_layer, direction_key):
  """A pool-shaped ProbeData whose layer `signal_layer` encodes the subgoal
  linearly (a fixed random direction per label, from `direction_key`, plus
  unit noise); the other layers are noise."""
  pc = config.probe
  num_layers, width = config.model.num_layers, config.model.width
  n, t, k = pc.pool_episodes, config.data.seq_len, config_lib.num_subgoals(config)
  k_label, k_noise, k_valid = jax.random.split(data_key, 3)
  subgoal = jax.random.randint(k_label, (n, t), 0, k)
  valid = jax.random.uniform(k_valid, (n, t)) < 0.8
  residuals = jax.random.normal(k_noise, (num_layers + 1, n, t, width))
  directions = 0.5 * jax.random.normal(direction_key, (k, width))
  residuals = residuals.at[signal_layer].add(directions[subgoal])
  return probes.ProbeData(
      residuals=residuals, subgoal=jnp.where(valid, subgoal, -1),
      segment_step=jnp.broadcast_to(jnp.arange(t) % 5, (n, t)), valid=valid)


def test_probe_learns_a_linear_code_and_not_noise():
  c = _config()
  directions = jax.random.key(7)
  train = _synthetic(jax.random.key(0), c, 1, directions)
  heldout = _synthetic(jax.random.key(1), c, 1, directions)
  trainer = probes.make_probe_trainer(c)
  norm = probes.residual_stats(train)
  np.testing.assert_allclose(norm['scale'][0], 1.0, atol=0.1)
  state = trainer.init(jax.random.key(2), norm)
  for _ in range(c.probe.num_steps // c.probe.log_every):
    state, _ = trainer.train_chunk(state, train)
  result = trainer.evaluate(state, heldout)
  acc = result['accuracy']
  assert acc[1] > 0.9, acc
  # Noise layers: chance (4 balanced labels), on ~1200 held-out steps.
  assert abs(acc[0] - 0.25) < 0.06 and abs(acc[2] - 0.25) < 0.06, acc
  assert 0.2 < result['majority_accuracy'] < 0.32
  # Accuracy by step within a segment: only bins 0..4 hold data (t % 5).
  assert np.all(result['count_by_segment_step'][5:] == 0)
  assert np.all(result['accuracy_by_segment_step'][1, :5] > 0.85)


def test_segment_steps():
  index = jnp.array([[0, 0, 0, 1, 1, 2, 2, 2, 2],
                     [0, 1, 1, 1, 1, 1, 2, 2, 2]])
  np.testing.assert_array_equal(
      probes.segment_steps(index),
      [[0, 1, 2, 0, 1, 0, 1, 2, 3], [0, 0, 1, 2, 3, 4, 0, 1, 2]])


@pytest.mark.parametrize('field,value,match', [
    ('num_steps', 0, r'config\.probe\.num_steps=0'),
    ('num_steps', 30, r'config\.probe\.num_steps.*log_every'),
    ('learning_rate', 0.0, r'config\.probe\.learning_rate=0\.0'),
    ('split', 'post', r"config\.probe\.split='post'.*'expert'"),
    ('pool_episodes', 4, r'config\.probe\.pool_episodes.*batch_size'),
    ('max_segment_step', 0, r'config\.probe\.max_segment_step=0'),
])
def test_bad_probe_fields_name_the_field(field, value, match):
  c = _config()
  c.probe[field] = value
  with pytest.raises(ConfigError, match=match):
    config_lib.build(c)


def test_missing_pretraining_says_what_to_run(tmp_path):
  with pytest.raises(FileNotFoundError, match='experiments/pretrain.py'):
    fig3.run(_config(), str(tmp_path))
  assert not os.path.exists(tmp_path / 'checkpoints')


def _save_checkpoints(config, workdir, steps):
  """Stands in for a pretraining run (the job only needs kept checkpoints):
  differently initialised base models saved at `steps`."""
  trainer = pretrain.make_pretrainer(config)
  with pretrain.checkpointer(config, workdir) as ckpt:
    for i, step in enumerate(steps):
      ckpt.maybe_save(step, trainer.init(jax.random.key(i)), force=True)


def test_run_probes_every_checkpoint_and_resumes(tmp_path, monkeypatch):
  c = _config()
  _save_checkpoints(c, str(tmp_path), [10, 20])
  summary = fig3.run(c, str(tmp_path))
  out = tmp_path / 'probe'
  assert summary['checkpoint_steps'] == [10, 20]
  for name in ('step_00000010.json', 'step_00000020.json', 'results.json',
               'accuracy_by_layer.csv', 'accuracy_by_segment_step.csv',
               'fig3_probe_accuracy.png',
               'probe_accuracy_by_segment_step.png'):
    assert (out / name).exists(), name
  with open(out / 'step_00000020.json') as f:
    r = json.load(f)
  assert len(r['accuracy']) == c.model.num_layers + 1
  assert all(0.0 <= a <= 1.0 for a in r['accuracy'])
  assert 0.0 < r['majority_accuracy'] < 1.0
  assert len(r['accuracy_by_segment_step'][0]) == c.probe.max_segment_step
  lines = open(out / 'accuracy_by_layer.csv').read().strip().split('\n')
  assert len(lines) == 1 + 2 * (c.model.num_layers + 1)
  assert (tmp_path / 'metrics' / 'probe.jsonl').exists()

  # A rerun recomputes nothing.
  def fail(*a, **k):
    raise AssertionError('recomputed a probed checkpoint')
  monkeypatch.setattr(probes, 'train_probes', fail)
  assert fig3.run(c, str(tmp_path)) == summary
