"""Pretraining: the loss falls, resume is exact, mismatches are refused."""

import json
import os

import jax
import numpy as np
import pytest

from configs import gridworld
from irl.train import evaluate
from irl.train import pretrain
from irl.utils import checkpoint as ckpt_lib
from irl.utils import metrics as metrics_lib


def _config(num_steps=20):
  c = gridworld.get_config('test')
  c.pretrain.num_steps = num_steps
  return c


def _final_params(workdir, config):
  return pretrain.load_params(config, workdir)


def test_loss_decreases_on_fresh_expert_data():
  c = _config(100)
  c.pretrain.learning_rate = 3e-3
  c.pretrain.obs_loss_weight = 0.0
  c.pretrain.log_every = c.pretrain.save_every = 25
  trainer = pretrain.make_pretrainer(c)
  state = trainer.init(jax.random.key(0))
  losses = []
  for _ in range(4):
    state, m = trainer.train_chunk(state)
    losses.append(float(m['action_nll']))
  assert int(state.step) == 100
  # Uniform guessing over 4 moves costs ln 4 = 1.386 nats; the model must do
  # better than that on fresh data it has never seen.
  assert losses[0] > 1.36 and losses[-1] < 1.34, losses


def test_resume_equals_uninterrupted_run(tmp_path):
  c = _config(20)
  pretrain.train(c, str(tmp_path / 'straight'), run_eval=False)
  interrupted = _config(10)   # a run killed after its step-10 checkpoint
  pretrain.train(interrupted, str(tmp_path / 'resumed'), run_eval=False)
  pretrain.train(c, str(tmp_path / 'resumed'), run_eval=False)
  a = _final_params(str(tmp_path / 'straight'), c)
  b = _final_params(str(tmp_path / 'resumed'), c)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  steps = [r['step'] for r in metrics_lib.read_jsonl(
      tmp_path / 'resumed' / 'metrics' / 'pretrain.jsonl') if 'loss' in r]
  assert steps == [5, 10, 15, 20]
  assert os.path.exists(tmp_path / 'resumed' / 'tb' / 'pretrain')
  assert os.path.exists(tmp_path / 'resumed' / 'config.json')


def test_checkpoint_of_another_config_is_refused(tmp_path):
  c = _config(5)
  pretrain.train(c, str(tmp_path), run_eval=False)
  wider = _config(5)
  wider.model.width = 48
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match='model.width'):
    pretrain.train(wider, str(tmp_path), run_eval=False)
  with pytest.raises(FileNotFoundError, match='no finished pretraining run'):
    pretrain.load_params(_config(40), str(tmp_path))


def test_evaluation_reports_ceiling_and_closed_loop(tmp_path):
  c = _config(5)
  summary = pretrain.train(c, str(tmp_path), run_eval=True)
  assert 0.5 < summary['heldout/ceiling_action_acc'] < 1.0
  assert summary['heldout/ceiling_action_nll'] > 0
  for k in ('closed_loop/complete_pretrain_task', 'closed_loop/post_task_success',
            'closed_loop/pretrain_success', 'heldout/action_acc'):
    assert 0.0 <= summary[k] <= 1.0
  with open(tmp_path / 'metrics' / 'pretrain_summary.json') as f:
    assert json.load(f)['num_steps'] == 5


def test_complete_task_fraction():
  table = [(0, 1, 4, 5, 0, 1), (2, 3, 0, 1, 4, 5)]
  visits = np.array([[0, 1, 4, 5, 0, 1, -1], [2, 3, 0, 1, 4, 4, -1],
                     [2, 3, 0, 1, 4, 5, 6], [0, 1, -1, -1, -1, -1, -1]])
  assert evaluate.complete_task_fraction(visits, table) == 0.5
