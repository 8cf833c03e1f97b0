"""Metacontroller: the scan is the step cell, β ≡ 1, frozen θ, KL, gradients,
boundary scoring, config errors. Tiny sizes; compiled functions are shared."""

import csv
import dataclasses
import functools
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gridworld
from irl import config as config_lib
from irl.analysis import figures
from irl.analysis import rate_distortion
from irl.analysis import reports
from irl.models import common
from irl.models import metacontroller as mc_lib
from irl.train import metacontroller as mct
from irl.train import pretrain
from irl.train import segmentation as seg
from irl.utils import checkpoint as ckpt_lib
from irl.utils import config_utils
from irl.utils import metrics as metrics_lib

B, T = 3, 7
LENGTHS = np.array([7, 4, 1])


def _config(**overrides):
  c = gridworld.get_config('test')
  for k, v in overrides.items():
    c.metacontroller[k] = v
  c.lock()   # as configs from absl flags are
  return c


def _fill(tree, seed=0):
  """Concrete values for an eval_shape tree (numpy: nothing to compile)."""
  rng = np.random.default_rng(seed)
  def leaf(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.key(0)
    if jnp.issubdtype(x.dtype, jnp.floating):
      return (0.05 * rng.standard_normal(x.shape)).astype(x.dtype)
    return np.zeros(x.shape, x.dtype)
  return jax.tree.map(leaf, tree)


@functools.lru_cache(maxsize=None)
def _pretrain_state():
  """A stand-in for a pretrained base model of the test preset (random)."""
  c = _config()
  return _fill(jax.eval_shape(pretrain.make_pretrainer(c).init,
                              jax.random.key(c.seed)))


def _fake_pretrained(config, workdir):
  """A 'finished' pretraining checkpoint in workdir."""
  ckpt = pretrain.checkpointer(config, workdir)
  ckpt.maybe_save(config.pretrain.num_steps, _pretrain_state(), force=True)
  ckpt.close()
  return _pretrain_state().params


def _initial_state():
  # The very call (and compilation) that `train` makes for the test preset.
  c = _config()
  return mct.make_trainer(c).init(jax.random.key(c.metacontroller.seed),
                                  _pretrain_state().params,
                                  c.metacontroller.kl_weight)


def _inputs():
  cfg = mct.metacontroller_config(_config())
  rng = np.random.default_rng(0)
  e = 3.0 * rng.standard_normal((B, T, cfg.width)).astype(np.float32)
  valid = np.arange(T)[None, :] < LENGTHS[:, None]
  noise = rng.standard_normal((B, T, cfg.latent_dim)).astype(np.float32)
  return jnp.asarray(e), jnp.asarray(valid), jnp.asarray(noise)


@functools.lru_cache(maxsize=None)
def _model(always_switch=False):
  # β ≡ 1 changes no parameter: both variants share one initialisation.
  cfg = dataclasses.replace(mct.metacontroller_config(_config()),
                            always_switch=always_switch)
  model = mc_lib.Metacontroller(cfg)
  params = _initial_state().params['metacontroller']
  # A fresh decoder is the identity edit (B = 0); a random decoder makes
  # every output depend on every component.
  rng = np.random.default_rng(2)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: (0.3 * rng.standard_normal(x.shape).astype(np.float32)
                    if 'decoder' in jax.tree_util.keystr(p) else x), params)
  return model, params, jax.jit(model.apply), jax.jit(
      functools.partial(model.apply, method=mc_lib.Metacontroller.step))


def test_scan_equals_python_loop_of_steps():
  model, params, apply, step = _model()
  e, valid, noise = _inputs()
  out = apply(params, e, valid, noise)
  state = model.initial_state(B)
  betas, codes, factors = [], [], []
  for t in range(T):
    state, so, fac = step(params, state, e[:, t], out.proposal[:, t])
    betas.append(so.switch_gate)
    codes.append(so.latent_code)
    factors.append(fac)
  np.testing.assert_allclose(np.stack(betas, 1), out.switch_gate, atol=1e-5)
  np.testing.assert_allclose(np.stack(codes, 1), out.latent_code, atol=1e-5)
  for i in range(2):
    np.testing.assert_allclose(np.stack([f[i] for f in factors], 1),
                               out.controller.factors()[i], atol=1e-5)
  np.testing.assert_allclose(state.history, out.state.history, atol=1e-5)
  # The recurrence is the paper's: z_t = β_t z̃_t + (1 − β_t) z_{t−1}.
  beta = np.asarray(out.switch_gate)[..., None]
  z, prop = np.asarray(out.latent_code), np.asarray(out.proposal)
  np.testing.assert_allclose(z[:, 1:], beta[:, 1:] * prop[:, 1:]
                             + (1 - beta[:, 1:]) * z[:, :-1], atol=1e-5)
  # The first step always takes a fresh code; the learned gate is soft.
  np.testing.assert_array_equal(out.switch_gate[:, 0], 1.0)
  np.testing.assert_allclose(z[:, 0], prop[:, 0], atol=1e-6)
  assert np.all((np.asarray(out.switch_gate[:, 1:]) > 0)
                & (np.asarray(out.switch_gate[:, 1:]) < 1))
  # z̃ = μ + σ ε with the given noise.
  np.testing.assert_allclose(
      prop, out.mean + np.exp(0.5 * np.asarray(out.log_var)) * noise,
      atol=1e-5)


def test_hard_switch_gate_for_internal_rl():
  model, params, apply, _ = _model()
  e, valid, noise = _inputs()
  out = apply(params, e, valid, noise)
  step = jax.jit(functools.partial(model.apply, method=mc_lib.Metacontroller.step))
  state = model.initial_state(B)
  hold = jnp.zeros((B,))
  for t in range(3):
    state, so, _ = step(params, state, e[:, t], out.proposal[:, t], hold)
    # The first step takes z̃_0; a closed gate holds it afterwards.
    np.testing.assert_allclose(so.latent_code, out.proposal[:, 0], atol=1e-6)
  state, so, _ = step(params, state, e[:, 3], out.proposal[:, 3], hold + 1)
  np.testing.assert_allclose(so.latent_code, out.proposal[:, 3], atol=1e-6)


def test_switching_unit_reads_the_code_in_use():
  model, params, _, _ = _model()
  e, _, _ = _inputs()
  state = model.initial_state(B).replace(first=jnp.zeros((B,), bool))
  switch = functools.partial(model.apply, params,
                             method=mc_lib.Metacontroller.switch)
  other = state.replace(latent_code=jnp.ones_like(state.latent_code))
  assert not np.allclose(switch(state, e[:, 0]), switch(other, e[:, 0]))


def test_always_switch_gives_per_step_codes():
  _, params, apply, _ = _model(always_switch=True)
  e, valid, noise = _inputs()
  out = apply(params, e, valid, noise)
  np.testing.assert_array_equal(out.switch_gate, 1.0)
  np.testing.assert_allclose(out.latent_code, out.proposal, atol=1e-6)
  mean = apply(params, e, valid, None)
  np.testing.assert_allclose(mean.latent_code, mean.mean, atol=1e-6)


def test_embedder_ignores_padding_and_reads_both_directions():
  _, params, apply, _ = _model()
  e, valid, noise = _inputs()
  x = np.arange(2 * 5).reshape(2, 5)
  v = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  rev = np.asarray(mc_lib.reverse_valid(jnp.asarray(x), jnp.asarray(v)))
  np.testing.assert_array_equal(rev, [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]])
  np.testing.assert_array_equal(
      mc_lib.reverse_valid(jnp.asarray(rev), jnp.asarray(v)), x)
  out = apply(params, e, valid, noise)
  padded = jnp.where(valid[..., None], e, 100.0)
  out_padded = apply(params, padded, valid, noise)
  np.testing.assert_allclose(out.sequence_embedding,
                             out_padded.sequence_embedding, atol=1e-5)
  mask = np.asarray(valid)
  np.testing.assert_allclose(np.asarray(out.switch_gate)[mask],
                             np.asarray(out_padded.switch_gate)[mask],
                             atol=1e-5)
  # s is non-causal: the last valid step changes the code of the first.
  late = e.at[0, LENGTHS[0] - 1].add(5.0)
  assert not np.allclose(apply(params, late, valid, noise).mean[0, 0],
                         out.mean[0, 0])


def test_kl_matches_closed_form():
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(5, 8))
  log_var = rng.normal(size=(5, 8))
  var = np.exp(log_var)
  expected = 0.5 * np.sum(var + mean ** 2 - 1 - log_var, -1)
  np.testing.assert_allclose(common.gaussian_kl(jnp.asarray(mean),
                                                jnp.asarray(log_var)),
                             expected, rtol=1e-5)
  np.testing.assert_allclose(common.gaussian_kl(jnp.zeros(8), jnp.zeros(8)),
                             0.0, atol=1e-7)
  # Monte Carlo: E_q[ln q(z) − ln N(z; 0, I)] for one posterior.
  z = mean[0] + np.sqrt(var[0]) * rng.normal(size=(200_000, 8))
  log_q = -0.5 * np.sum((z - mean[0]) ** 2 / var[0] + log_var[0], -1)
  log_p = -0.5 * np.sum(z ** 2, -1)
  np.testing.assert_allclose(np.mean(log_q - log_p), expected[0], rtol=0.02)


# --------------------------------------------------------------------------
# Trainer (test preset).


def test_gradients_reach_every_metacontroller_leaf():
  c = _config()
  trainer = mct.make_trainer(c)
  state = _initial_state()
  # B = 0 at init (identity edit) blocks the gradient upstream of the
  # decoder on the very first step; after an update it flows everywhere.
  rng = np.random.default_rng(4)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: (0.3 * rng.standard_normal(x.shape).astype(np.float32)
                    if "['b']" in jax.tree_util.keystr(p) else x),
      state.params)
  # The training step itself counts the all-zero gradient leaves (and shares
  # its compilation with the training test).
  state, base = ckpt_lib.on_device((state.replace(params=params),
                                _pretrain_state().params))
  _, metrics = trainer.train_chunk(state, base)
  norms = {k: float(v) for k, v in metrics.items() if k.startswith('grad_')}
  assert float(metrics['zero_grad_leaves']) == 0, norms
  for part in ('embedder', 'encoder', 'history', 'switch_gate', 'decoder'):
    assert norms[f'grad_norm/{part}'] > 0, norms
  assert np.isfinite(float(metrics['loss']))


def test_training_freezes_base_model_and_resumes(tmp_path):
  c = _config()
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  with pytest.raises(FileNotFoundError, match='checkpoints/pretrain'):
    mct.train(c, straight)
  base = _fake_pretrained(c, straight)
  _fake_pretrained(c, resumed)

  summary = mct.train(c, straight)
  # θ is untouched on disk and is not in the saved training state.
  after = pretrain.load_params(c, straight)
  jax.tree.map(np.testing.assert_array_equal, base, after)
  phi, theta = mct.load_params(c, straight)
  jax.tree.map(np.testing.assert_array_equal, base, theta)
  ckpt = mct.checkpointer(c, straight)
  leaves = ckpt.read_meta(ckpt.latest_step())['leaves']
  ckpt.close()
  assert leaves and not any('base_model' in k for k in leaves)
  fresh = _initial_state()
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)),
                         phi, fresh.params['metacontroller'])
  assert any(jax.tree.leaves(changed))

  for k in ('heldout/f1', 'heldout/precision', 'heldout/recall',
            'heldout/median_switches_per_episode', 'heldout/kl',
            'heldout/code_subgoal_acc', 'heldout/code_subgoal_chance',
            'heldout/action_nll_tied', 'heldout/action_nll_untied'):
    assert k in summary
  assert summary['heldout/median_boundaries_per_episode'] >= 1
  # A tie is 2 or more optimal moves, so its floor is at least ln 2.
  assert summary['heldout/ceiling_nll_tied'] >= np.log(2) - 1e-6
  assert 0.0 < summary['heldout/tied_fraction'] < 1.0
  out_dir = os.path.join(straight, 'metacontroller')
  # The trainer writes arrays; the figure is drawn from them.
  assert not os.path.exists(os.path.join(out_dir, 'beta_traces.png'))
  assert reports.metacontroller_traces(c, straight) == os.path.join(
      out_dir, 'beta_traces.png')
  assert os.path.exists(os.path.join(out_dir, 'beta_traces.png'))
  assert os.path.exists(os.path.join(out_dir, 'segmentation.json'))
  assert os.path.exists(os.path.join(straight, 'metrics',
                                     'metacontroller.jsonl'))

  half = _config(num_steps=5)
  mct.train(half, resumed, run_eval=False)
  mct.train(c, resumed, run_eval=False)
  jax.tree.map(np.testing.assert_array_equal, phi,
               mct.load_params(c, resumed)[0])
  # The shorter run length on the same workdir loads its own step, not 10.
  phi5 = mct.load_params(half, resumed)[0]
  assert not all(jax.tree.leaves(jax.tree.map(
      lambda a, b: np.array_equal(a, b), phi5, phi)))

  other = _config(kl_weight=0.5)
  with pytest.raises(ckpt_lib.CheckpointMismatchError,
                     match='metacontroller.kl_weight'):
    mct.train(other, straight, run_eval=False)


@pytest.mark.parametrize('delay,warmup,expected', [
    # α·clip((step - 2) / 5): 0, 0, 0, .2, .4 on steps 0..4, then .6, .8,
    # 1, 1, 1; a chunk logs the mean.
    (2, 5, (0.12, 0.88)),
    # No ramp: a step from 0 to α at step 5.
    (5, 0, (0.0, 1.0)),
])
def test_kl_delay_and_warmup_ramp_alpha_from_zero(delay, warmup, expected):
  c = gridworld.get_config('test')
  c.metacontroller.kl_delay, c.metacontroller.kl_warmup = delay, warmup
  c.rate_distortion.num_steps = 0   # the sweep's 5 steps would end mid-ramp
  state, base = ckpt_lib.on_device((_initial_state(),
                                    _pretrain_state().params))
  trainer = mct.make_trainer(c)
  alpha = c.metacontroller.kl_weight
  for fraction in expected:
    state, metrics = trainer.train_chunk(state, base)
    np.testing.assert_allclose(float(metrics['kl_weight_now']),
                               fraction * alpha, rtol=1e-5)
    if fraction == 0.0:
      # The loss the gradient followed is the NLL alone, not the logged α.
      assert float(metrics['kl']) > 0
      np.testing.assert_allclose(float(metrics['loss']),
                                 float(metrics['action_nll']), rtol=1e-6)
  # The state keeps the target α; the ramp is a function of the step.
  assert float(state.kl_weight) == pytest.approx(alpha)


def test_decoder_init_scale_reaches_the_metacontroller_decoder():
  cfg = mct.metacontroller_config(_config(decoder_init_scale=0.5))
  assert cfg.decoder_init_scale == 0.5
  e, valid, _ = _inputs()
  for scale, nonzero in ((0.0, False), (0.5, True)):
    model = mc_lib.Metacontroller(dataclasses.replace(
        cfg, decoder_init_scale=scale))
    params = model.init(jax.random.key(0), e, valid)
    kernel = np.asarray(params['params']['decoder']['b']['kernel'])
    assert bool(np.any(kernel != 0)) == nonzero
    if nonzero:
      # A's std is 1/sqrt(width); B's is init_scale times that.
      assert np.std(kernel) == pytest.approx(scale / np.sqrt(cfg.width),
                                             rel=0.2)


def test_rl_checkpoints_accept_the_segmenters_added_fields():
  # pylint: disable=g-import-not-at-top
  from irl.rl import train as rl_train
  from irl.train import compile as compile_train
  # RL fingerprints the whole metacontroller and compile sections: a field
  # added there must be known to RL's checkpoints too, or older runs are
  # refused.
  assert set(mct.ADDED_FIELDS) <= set(rl_train.ADDED_FIELDS)
  assert set(compile_train.ADDED_FIELDS) <= set(rl_train.ADDED_FIELDS)


def test_cotraining_puts_base_model_in_optimiser_state():
  base = jax.eval_shape(_pretrain_state).params
  frozen = jax.eval_shape(mct.make_trainer(_config()).init,
                          jax.random.key(0), base, 0.1)
  assert set(frozen.params) == {'metacontroller'}
  num_mc = len(jax.tree.leaves(frozen.params))
  for mode in ('cotrain', 'cotrain_scratch'):
    trainer = mct.make_trainer(_config(base_model=mode))
    # Shapes only (eval_shape): nothing is compiled.
    state = jax.eval_shape(trainer.init, jax.random.key(0),
                           base if mode == 'cotrain' else None, 0.1)
    assert set(state.params) == {'metacontroller', 'base_model'}
    num_all = len(jax.tree.leaves(state.params))
    assert num_all == num_mc + len(jax.tree.leaves(base))
    # AdamW holds two moments per parameter it trains.
    assert (len(jax.tree.leaves(state.opt_state))
            - len(jax.tree.leaves(frozen.opt_state))) >= 2 * (num_all - num_mc)
  assert mct.run_name(_config(base_model='cotrain_scratch')) == (
      'metacontroller_cotrain_scratch')
  assert mct.run_name(_config(switching='always')) == 'metacontroller_beta1'


# --------------------------------------------------------------------------
# Boundary scoring.


def _scores(beta, subgoal_index, valid=None, tolerance=1):
  beta = np.asarray(beta, np.float32)[None]
  subgoal_index = np.asarray(subgoal_index)[None]
  valid = np.ones_like(beta, bool) if valid is None else np.asarray(
      valid, bool)[None]
  return seg.segmentation_report(beta, valid, subgoal_index,
                                 tolerance=tolerance)


def test_f1_on_hand_made_cases():
  goals = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]          # boundaries at t = 3, 7
  exact = [1, 0, 0, 1, 0, 0, 0, 1, 0, 0]
  r = _scores(exact, goals)
  assert (r['precision'], r['recall'], r['f1']) == (1.0, 1.0, 1.0)
  assert r['median_switches_per_episode'] == 2
  assert r['median_boundaries_per_episode'] == 2
  # One step late and one step early still match; t = 0 is never scored.
  r = _scores([0, 0, 0, 0, 1, 0, 1, 0, 0, 0], goals)
  assert r['f1'] == 1.0
  # Two steps off: one false positive and one miss.
  r = _scores([0, 0, 0, 0, 0, 1, 0, 1, 0, 0], goals)
  assert (r['true_positives'], r['false_positives'],
          r['false_negatives']) == (1, 1, 1)
  assert r['precision'] == r['recall'] == r['f1'] == 0.5
  # Two switches around one boundary match it once.
  r = _scores([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], goals)
  assert (r['true_positives'], r['false_positives']) == (2, 1)
  np.testing.assert_allclose(r['f1'], 4 / 5)
  # Never switching: recall 0, F1 0, precision vacuously 1.
  r = _scores(np.zeros(10), goals)
  assert (r['precision'], r['recall'], r['f1']) == (1.0, 0.0, 0.0)
  assert r['median_count_error'] == -2
  # Steps after the episode ends are ignored, switches and boundaries alike.
  valid = np.arange(10) < 6
  r = _scores([1, 0, 0, 1, 0, 0, 0, 1, 1, 1], goals, valid)
  assert (r['true_positives'], r['false_positives'],
          r['false_negatives']) == (1, 0, 0)
  # The threshold is strict: β = 0.5 is not a switch.
  assert _scores([1, 0, 0, 0.5, 0, 0, 0, 0.51, 0, 0], goals)[
      'true_positives'] == 1
  # Micro average over episodes.
  beta = np.array([exact, np.zeros(10)], np.float32)
  both = seg.segmentation_report(beta, np.ones((2, 10), bool),
                                 np.array([goals, goals]))
  assert both['recall'] == 0.5 and both['precision'] == 1.0
  np.testing.assert_allclose(both['f1'], 2 / 3)
  assert seg.match_events([1, 5, 6], [5], tolerance=1) == 1


def test_code_subgoal_accuracy_separates_named_and_blind_codes():
  rng = np.random.default_rng(0)
  b, t = 64, 12
  # Three segments of 4 steps per episode, each a random pair 0..3.
  pairs = rng.integers(0, 4, (b, 3))
  index = np.repeat(np.arange(3), 4)[None].repeat(b, 0)
  subgoal = np.take_along_axis(pairs, index, 1)
  valid = np.ones((b, t), bool)
  valid[:, -2:] = False                    # padding
  subgoal[~valid] = -1
  named = np.eye(4)[subgoal.clip(0)] + 0.1 * rng.standard_normal((b, t, 4))
  blind = rng.standard_normal((b, t, 4))
  good = seg.code_subgoal_accuracy(named, subgoal, index, valid)
  bad = seg.code_subgoal_accuracy(blind, subgoal, index, valid)
  assert good['code_subgoal_samples'] == 3 * b
  assert good['code_subgoal_acc'] == 1.0
  assert abs(bad['code_subgoal_acc'] - 0.25) < 0.15
  assert 0.1 < bad['code_subgoal_chance'] < 0.45


def test_nll_at_ties_splits_steps_by_the_experts_optimal_moves():
  # Two episodes of 4 steps, the last step of the second padding.
  k = np.array([[1, 2, 1, 3], [2, 1, 1, 4]])
  valid = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
  nll = np.array([[0.1, 0.5, 0.3, 1.0], [0.9, 0.2, 0.0, 99.0]])
  out = seg.nll_at_ties({'optimal_moves': k, 'valid': valid,
                         'action_nll_posterior_mean': nll,
                         'action_nll_no_control': 2 * nll})
  tied = [0.5, 1.0, 0.9]               # k = 2, 3, 2; the padded k = 4 is out
  assert out['tied_fraction'] == 3 / 7
  np.testing.assert_allclose(out['action_nll_tied'], np.mean(tied))
  np.testing.assert_allclose(out['action_nll_untied'], 0.6 / 4)
  np.testing.assert_allclose(out['action_nll_no_control_tied'],
                             2 * np.mean(tied))
  np.testing.assert_allclose(out['action_nll_no_control_untied'], 0.3)
  np.testing.assert_allclose(out['ceiling_nll_tied'],
                             np.log([2, 3, 2]).mean())
  # No tie at all: NaN, not a perfect-looking 0.
  none = seg.nll_at_ties({'optimal_moves': np.ones_like(k), 'valid': valid,
                          'action_nll_posterior_mean': nll,
                          'action_nll_no_control': nll})
  assert np.isnan(none['action_nll_tied']) and none['tied_fraction'] == 0


def test_eval_arrays_of_zero_episodes_leave_no_stale_traces(tmp_path):
  arrays = {k: np.zeros((4, 6), np.int32) for k in
            ('beta', 'valid', 'subgoal_index', 'subgoal')}
  seg.save_eval_arrays(str(tmp_path), arrays, 2)
  assert seg.load_eval_arrays(str(tmp_path))['beta'].shape == (2, 6)
  (tmp_path / seg.SUMMARY).write_text('{}')
  assert reports._traces(str(tmp_path), 0.5, lambda scores: 't')
  assert (tmp_path / 'beta_traces.png').exists()
  # A rerun that keeps no traces removes the earlier run's, and its figure.
  seg.save_eval_arrays(str(tmp_path), arrays, 0)
  assert seg.load_eval_arrays(str(tmp_path)) is None
  assert reports._traces(str(tmp_path), 0.5, lambda scores: 't') is None
  assert not (tmp_path / 'beta_traces.png').exists()


def _rate_distortion_config():
  # A free start of 5 of the sweep's 10 steps (which override the
  # metacontroller's 20). The job test and the sharing test sweep the same
  # runs under this config, so they share the compiled vmapped chunks (2
  # and 4 runs) and evaluation.
  c = gridworld.get_config('test')
  c.rate_distortion.base_models = ('frozen',)
  c.rate_distortion.num_steps = 10
  c.metacontroller.num_steps = 20
  c.metacontroller.kl_delay = 5
  c.metacontroller.kl_warmup = 0
  return c


def test_rate_distortion_shares_the_free_start_across_alphas(tmp_path):
  # While α is 0 for every run (the free start), runs of one seed are the
  # same run: trained once and then split, they end where separate runs do.
  c = config_lib.replace(_rate_distortion_config(),
                         {'metacontroller.base_model': 'frozen'})
  # Each run finds its seed's copy.
  group = [(0.5, 1), (0.0, 0), (0.5, 0), (0.0, 1)]
  assert rate_distortion.shared_steps(c, group, 10) == 5
  assert rate_distortion.shared_steps(c, [(0.0, 0), (0.5, 1)], 10) == 0
  out = {}
  for share in (True, False):
    workdir = str(tmp_path / str(share))
    base = _fake_pretrained(c, workdir)
    out[share] = rate_distortion.train_group(c, workdir, 'frozen', group, 10,
                                             base, share=share)
  name = rate_distortion.group_name('frozen', group, 10)
  free_start = rate_distortion.shared_name('frozen', group, 10)
  checkpoints = tmp_path / 'True' / 'checkpoints' / 'rate_distortion'

  def rows(run_name):  # the metrics rows a group (or free start) wrote
    return metrics_lib.read_jsonl(str(
        tmp_path / 'True' / 'metrics' / f'rate_distortion_{run_name}.jsonl'))

  assert (checkpoints / free_start).is_dir()
  assert not (tmp_path / 'False' / 'checkpoints' / 'rate_distortion' /
              free_start).exists()
  # The group itself trained only the steps after the shared ones.
  assert [r['step'] for r in rows(name)] == [10]
  for shared, alone in zip(out[True], out[False]):
    for k in ('action_nll', 'kl', 'f1', 'median_switches_per_episode'):
      np.testing.assert_allclose(shared[k], alone[k], rtol=1e-4, atol=1e-6,
                                 err_msg=k)
  # The two α of seed 0 did part after the shared steps.
  assert out[True][1]['kl'] != out[True][2]['kl']
  # Killed before the group's first checkpoint: the rerun starts from the
  # shared checkpoint and ends where the first call did.
  shutil.rmtree(checkpoints / name)
  again = rate_distortion.train_group(c, str(tmp_path / 'True'), 'frozen',
                                      group, 10, base, share=True)
  for first, second in zip(out[True], again):
    np.testing.assert_allclose(second['action_nll'], first['action_nll'],
                               rtol=1e-5)
  # Other rates of the same seeds (a later call extending the sweep) start
  # from the same shared steps: they are not trained again, and the run of
  # α = 0.5 on seed 1 ends where it did in the first group.
  others = [(0.5, 1), (0.2, 0), (0.2, 1), (0.9, 0)]
  assert rate_distortion.shared_name('frozen', others, 10) == free_start
  before = rows(free_start)
  extended = rate_distortion.train_group(c, str(tmp_path / 'True'), 'frozen',
                                         others, 10, base, share=True)
  assert rows(free_start) == before
  # The extended group itself trained only the steps after the shared ones.
  extended_name = rate_distortion.group_name('frozen', others, 10)
  assert [r['step'] for r in rows(extended_name)] == [10]
  np.testing.assert_allclose(extended[0]['action_nll'],
                             out[True][0]['action_nll'], rtol=1e-5)


def test_rate_distortion_job_writes_every_run(tmp_path, monkeypatch):
  # The vmapped sweep (α × seeds in one computation) reports each run's
  # segmentation and code scores.
  c = _rate_distortion_config()
  _fake_pretrained(c, str(tmp_path))
  rate_distortion.run(c, str(tmp_path))
  with open(tmp_path / 'rate_distortion' / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  runs = {(float(r['kl_weight']), int(r['seed'])) for r in rows}
  assert runs == {(a, s) for a in c.rate_distortion.kl_weights
                  for s in c.rate_distortion.seeds}
  assert {int(r['num_steps']) for r in rows} == {10}
  for r in rows:
    assert 0.0 <= float(r['f1']) <= 1.0
    assert 0.0 <= float(r['code_subgoal_acc']) <= 1.0
    assert 0.0 < float(r['code_subgoal_chance']) <= 1.0
  assert (tmp_path / 'rate_distortion' / 'rate_distortion.png').exists()

  # Run again: the stored results are this config's, so nothing trains.
  def no_training(*args, **kwargs):
    raise AssertionError('a finished group was trained again')
  monkeypatch.setattr(rate_distortion, 'train_group', no_training)
  first = rate_distortion.run(c, str(tmp_path))
  assert len(first) == len(rows)
  monkeypatch.undo()
  # Scored another way (a switch threshold the checkpoint does not fix),
  # every run is evaluated again from its finished checkpoint.
  c.metacontroller.switch_threshold = 0.3
  again = rate_distortion.run(c, str(tmp_path))
  assert len(again) == len(rows)
  assert {r['config_digest'] for r in again} == {
      rate_distortion.result_digest(config_lib.replace(
          c, {'metacontroller.base_model': 'frozen'}))}
  assert {r['config_digest'] for r in first}.isdisjoint(
      r['config_digest'] for r in again)
  # Under another recipe the same (mode, α, seed, steps) is not done: the
  # stored records are not served as this config's.
  c.metacontroller.learning_rate *= 2
  with pytest.raises(ckpt_lib.CheckpointMismatchError,
                     match='metacontroller.learning_rate'):
    rate_distortion.run(c, str(tmp_path))
  # ... and the stale results were taken down before the run failed.
  assert not (tmp_path / 'rate_distortion' / 'results.json').exists()
  assert not (tmp_path / 'rate_distortion' / 'rate_distortion.png').exists()


def test_figures_are_written(tmp_path):
  rng = np.random.default_rng(0)
  beta = rng.random((3, 12))
  valid = np.arange(12)[None] < np.array([[12], [8], [5]])
  goals = np.array([np.arange(12) // 4] * 3)
  path = figures.beta_traces(str(tmp_path / 'b.png'), beta, valid, goals, goals,
                         num_episodes=2, title='t')
  assert os.path.getsize(path) > 0
  records = [dict(kl=0.1 * i, action_nll=1 - 0.1 * i, kl_weight=a,
                  base_model=m, f1=f) for i, (a, m, f) in enumerate(
                      [(0.0, 'frozen', 0.2), (0.1, 'frozen', 0.9),
                       (0.1, 'cotrain_scratch', 0.1)])]
  path = figures.rate_distortion_figure(str(tmp_path / 'rd.png'), records)
  assert os.path.getsize(path) > 0


# --------------------------------------------------------------------------
# Config validation.


@pytest.mark.parametrize('field,value', [
    ('metacontroller.kl_weight', -0.1),
    ('metacontroller.kl_warmup', -1),
    ('metacontroller.kl_delay', -3),
    ('metacontroller.kl_warmup', 11),
    ('metacontroller.decoder_init_scale', -0.5),
    ('metacontroller.base_model', 'thawed'),
    ('metacontroller.switching', 'sometimes'),
    ('metacontroller.layer', 7),
    ('metacontroller.rank', 1000),
    ('metacontroller.num_steps', 7),
    ('metacontroller.seq_len', 101),
    ('metacontroller.embed_heads', 3),
    ('metacontroller.latent_dim', 0),
    ('rate_distortion.kl_weights', [0.1, -1.0]),
    ('rate_distortion.base_models', ['frozen', 'melted']),
])
def test_config_errors_name_the_field(field, value):
  c = gridworld.get_config('test')
  section, name = field.split('.')
  c[section][name] = value
  with pytest.raises(config_utils.ConfigError, match=field.replace(
      '.', r'\.')):
    config_lib.build(c)
