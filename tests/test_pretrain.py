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


@pytest.mark.parametrize('episodes_per_row,backbone',
                         [(1, 'transformer'), (2, 'transformer'), (2, 'hawk')])
def test_loss_decreases_on_fresh_expert_data(episodes_per_row, backbone):
  c = _config(100)
  c.data.episodes_per_row = episodes_per_row
  c.model.backbone = backbone
  c.pretrain.learning_rate = 3e-3
  c.pretrain.obs_loss_weight = 0.0
  c.pretrain.log_every = c.pretrain.save_every = 25
  # Every section is checked: the Fig. 4 depth runs count in chunks too.
  c.control.depth_pretrain_steps = 25
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
  # Packed rows are (almost) all real steps; plain rows are ~30% padding.
  if episodes_per_row == 2:
    assert float(m['valid_fraction']) > 0.95
    assert 1.5 < float(m['episodes_per_row']) <= 2
  else:
    assert float(m['valid_fraction']) < 0.85


def test_future_action_loss_matches_numpy():
  from irl.models import ModelOutput  # pylint: disable=g-import-not-at-top
  from irl.train import losses  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  b, t, k, a = 2, 5, 3, 4
  logits = rng.normal(size=(b, t, k, a)).astype(np.float32)
  actions = rng.integers(0, a, size=(b, t))
  valid = np.ones((b, t), bool)
  valid[1, 3:] = False
  out = ModelOutput(action_logits=None, action_mean=None, action_log_std=None,
                    obs_pred=None, residuals=None, cache=None,
                    future_logits=jax.numpy.asarray(logits))
  got = float(losses.future_action_nll(out, jax.numpy.asarray(actions),
                                       jax.numpy.asarray(valid)))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  per_k = []
  for j in range(1, k + 1):
    terms = [-logp[i, s, j - 1, actions[i, s + j]]
             for i in range(b) for s in range(t - j)
             if valid[i, s] and valid[i, s + j]]
    per_k.append(np.mean(terms))
  np.testing.assert_allclose(got, np.mean(per_k), rtol=1e-5)


def test_pretrain_loss_is_action_nll_plus_weighted_obs_nll():
  from irl.models import ModelOutput  # pylint: disable=g-import-not-at-top
  from irl.train import losses  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  b, t, a, d = 2, 4, 4, 6
  logits = rng.normal(size=(b, t, a)).astype(np.float32)
  obs_pred = rng.normal(size=(b, t, d)).astype(np.float32)
  actions = rng.integers(0, a, size=(b, t))
  next_obs = (rng.random((b, t, d)) < 0.3).astype(np.float32)
  valid = np.ones((b, t), bool)
  valid[0, 2:] = False
  out = ModelOutput(action_logits=jax.numpy.asarray(logits),
                    action_mean=None, action_log_std=None,
                    obs_pred=jax.numpy.asarray(obs_pred), residuals=None,
                    cache=None)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  a_nll = -np.take_along_axis(logp, actions[..., None], -1)[..., 0]
  p = 1 / (1 + np.exp(-obs_pred))
  o_nll = -(next_obs * np.log(p) + (1 - next_obs) * np.log(1 - p)).sum(-1)
  want_a, want_o = a_nll[valid].mean(), o_nll[valid].mean()
  args = (out, jax.numpy.asarray(actions), jax.numpy.asarray(next_obs),
          jax.numpy.asarray(valid))
  loss, m = losses.pretrain_loss(*args, obs_weight=0.01)
  np.testing.assert_allclose(float(m['obs_nll']), want_o, rtol=1e-5)
  np.testing.assert_allclose(float(loss), want_a + 0.01 * want_o, rtol=1e-5)
  # λ = 0 (the cpu preset): the action NLL alone, the observation head unused.
  loss, m = losses.pretrain_loss(*args, obs_weight=0.0)
  np.testing.assert_allclose(float(loss), want_a, rtol=1e-5)
  assert 'obs_nll' not in m


def test_future_action_heads_train_and_leave_the_rest_alone():
  c = _config(20)
  c.model.future_actions = 3
  trainer = pretrain.make_pretrainer(c)
  state = trainer.init(jax.random.key(0))
  batch_obs = jax.numpy.zeros((2, 7, trainer.model.config.obs_dim))
  out = trainer.model.apply(state.params, batch_obs)
  assert out.future_logits.shape == (2, 7, 3, 4)
  state, m = trainer.train_chunk(state)
  assert np.isfinite(float(m['future_action_nll']))
  # The paper's model (future_actions = 0) has no such heads or output.
  plain = pretrain.make_pretrainer(_config(20))
  params = plain.init(jax.random.key(0)).params
  assert plain.model.apply(params, batch_obs).future_logits is None
  assert 'future_head' not in params['params']
  c.pretrain.future_action_weight = -1.0
  with pytest.raises(ValueError, match='future_action_weight'):
    pretrain.make_pretrainer(c)


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


def test_a_shorter_run_loads_exactly_its_step_or_is_refused(tmp_path):
  # A workdir whose run went on to step 20 (checkpoints 10 and 20) serves
  # the 10-step model as step 10, never step 20 in its place.
  w = str(tmp_path)
  pretrain.train(_config(20), w, run_eval=False)
  p10, p20 = (_final_params(w, _config(n)) for n in (10, 20))
  ckpt = pretrain.checkpointer(_config(10), w)
  assert ckpt.all_steps() == [10, 20]
  init = pretrain.make_pretrainer(_config(10)).init(jax.random.key(0))
  jax.tree.map(np.testing.assert_array_equal, p10,
               ckpt.restore_at(10, init).params)
  ckpt.close()
  assert not all(jax.tree.leaves(jax.tree.map(
      lambda a, b: np.array_equal(a, b), p10, p20)))
  # The job itself resumes from (and reports) the step asked for.
  assert pretrain.train(_config(10), w, run_eval=False)['num_steps'] == 10
  with pytest.raises(pretrain.StepNotKeptError,
                     match=r'pretrain.num_steps=15.*kept only steps \[10, 20\]'):
    pretrain.load_params(_config(15), w)
  with pytest.raises(pretrain.StepNotKeptError, match='kept only steps'):
    pretrain.train(_config(15), w, run_eval=False)


def test_decaying_schedule_fingerprints_the_run_length(tmp_path):
  def wsd(n):
    c = _config(n)
    c.pretrain.lr_schedule = 'wsd'
    c.pretrain.lr_decay_steps = 5
    return c
  pretrain.train(wsd(20), str(tmp_path), run_eval=False)
  pretrain.load_params(wsd(20), str(tmp_path))
  # Step 10 of a run decaying to step 20 is not a 10-step run's model.
  with pytest.raises(ckpt_lib.CheckpointMismatchError,
                     match='pretrain.num_steps'):
    pretrain.load_params(wsd(10), str(tmp_path))
  with pytest.raises(ckpt_lib.CheckpointMismatchError,
                     match='pretrain.lr_schedule'):
    pretrain.load_params(_config(20), str(tmp_path))


def test_checkpoint_of_another_config_is_refused(tmp_path):
  c = _config(5)
  pretrain.train(c, str(tmp_path), run_eval=False)
  wider = _config(5)
  wider.model.width = 48
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match='model.width'):
    pretrain.train(wider, str(tmp_path), run_eval=False)
  with pytest.raises(FileNotFoundError, match='no finished pretraining run'):
    pretrain.load_params(_config(40), str(tmp_path))
  # The post-training task is never trained on: another novel task reuses
  # the base model, while any other env field is refused.
  novel = _config(5)
  novel.env.post_task = '0-1-2-3-4-5'
  pretrain.load_params(novel, str(tmp_path))
  walls = _config(5)
  walls.env.num_walls = 3
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match='env.num_walls'):
    pretrain.load_params(walls, str(tmp_path))


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
