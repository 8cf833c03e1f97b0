"""CompILE baseline: segment masks, causal switch, step-by-step adapter equals
the parallel forward, frozen θ, learning, config errors. Tiny sizes."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import gridworld
from irl import config as config_lib
from irl.analysis import reports
from irl.data import stream
from irl.models import BaseModel
from irl.models import compile as cl
from irl.models import compile_adapter
from irl.train import compile as ct
from irl.train import pretrain
from irl.utils import checkpoint as ckpt_lib
from irl.utils import config_utils

B, T = 3, 9
LENGTHS = np.array([9, 6, 2])
N = 4


def _config(**overrides):
  c = gridworld.get_config('test')
  for k, v in overrides.items():
    c.compile[k] = v
  c.lock()
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


@functools.lru_cache(maxsize=None)
def _model():
  """CompILE of the test preset with random parameters everywhere (a fresh
  decoder is the identity edit) and its jitted forward."""
  c = _config()
  model = cl.CompILE(ct.compile_config(c))
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 2, model.config.model.obs_dim)),
                          jnp.ones((1, 2), bool))
  params = jax.tree.map(lambda x: 3 * x, _fill(shapes, seed=1))
  apply = jax.jit(model.apply)
  return model, params, apply


def _inputs(seed=0):
  model, _, _ = _model()
  rng = np.random.default_rng(seed)
  obs = (rng.random((B, T, model.config.model.obs_dim)) < 0.1).astype(
      np.float32)
  valid = np.arange(T)[None, :] < LENGTHS[:, None]
  gumbel = rng.gumbel(size=(B, N - 1, T + 1)).astype(np.float32)
  noise = rng.standard_normal((B, N, model.config.latent_dim)).astype(
      np.float32)
  return jnp.asarray(obs), jnp.asarray(valid), gumbel, noise


# --------------------------------------------------------------------------
# Segmentation.


def test_segment_masks_sum_to_one_with_at_most_four_segments():
  _, params, apply = _model()
  obs, valid, gumbel, noise = _inputs()
  soft = apply(params, obs, valid, gumbel, noise)
  seg = np.asarray(soft.segment_mask)
  assert seg.shape == (B, N, T)
  assert np.all(seg >= -1e-6)
  np.testing.assert_allclose(seg.sum(1), 1.0, atol=1e-5)
  # Every boundary is a distribution over the T steps plus "none"; t = 0 and
  # padded steps are never boundaries.
  probs = np.exp(np.asarray(soft.boundary_log_probs))
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  assert np.all(probs[..., 0] < 1e-12)
  for i, length in enumerate(LENGTHS):
    assert np.all(probs[i, :, length:T] < 1e-12)
  np.testing.assert_allclose(np.asarray(soft.boundaries).sum(-1), 1.0,
                             atol=1e-5)
  # Evaluation: hard boundaries give one-hot masks whose segment index starts
  # at 0 and only moves forward, so at most N segments.
  hard = apply(params, obs, valid, None, None)
  seg = np.asarray(hard.segment_mask)
  np.testing.assert_array_equal(np.sort(seg, 1)[:, -1], 1.0)
  np.testing.assert_allclose(seg.sum(1), 1.0, atol=1e-6)
  index = seg.argmax(1)
  assert np.all(index[:, 0] == 0) and np.all(np.diff(index, axis=1) >= 0)
  # Kipf et al.'s telescoping masks sum to one for any boundaries.
  rng = np.random.default_rng(3)
  b = [jnp.asarray(jax.nn.softmax(rng.normal(size=(2, T + 1)) * 3))
       for _ in range(N - 1)]
  masks = np.asarray(cl.segment_masks(b))
  np.testing.assert_allclose(masks.sum(1), 1.0, atol=1e-6)
  # Hard starts past the cap stay in the last segment.
  starts = np.zeros((1, T), bool)
  starts[0, [0, 2, 3, 5, 7]] = True
  index = np.asarray(cl.hard_segment_masks(jnp.asarray(starts), N)).argmax(1)
  np.testing.assert_array_equal(index[0], [0, 0, 1, 2, 2, 3, 3, 3, 3])


def test_hazard_distribution_of_a_hard_boundary():
  # With hard earlier boundaries, q(τ = t) = β_t Π_{τ_prev < s < t} (1 − β_s).
  logit = jnp.asarray([[0.3, -1.0, 0.5, 2.0, -0.2, 0.1]])
  valid = jnp.ones((1, 6), bool)
  earlier = jnp.asarray([[0.0, 0.0, 1.0, 1.0, 1.0, 1.0]])   # τ_prev = 2
  q = np.exp(np.asarray(cl.boundary_log_probs(logit, valid, earlier)))[0]
  beta = np.asarray(jax.nn.sigmoid(logit))[0]
  np.testing.assert_allclose(q[:3], 0.0, atol=1e-12)
  np.testing.assert_allclose(q[3], beta[3], rtol=1e-5)
  np.testing.assert_allclose(q[4], (1 - beta[3]) * beta[4], rtol=1e-5)
  np.testing.assert_allclose(q[6], np.prod(1 - beta[3:]), rtol=1e-5)


def test_causal_switch_ignores_the_future():
  _, params, apply = _model()
  obs, valid, gumbel, noise = _inputs()
  out = apply(params, obs, valid, gumbel, noise)
  t = 4
  later = obs.at[:, t + 1:].set(1.0 - obs[:, t + 1:])
  out_later = apply(params, later, valid, gumbel, noise)
  np.testing.assert_allclose(out_later.switch_gate[:, :t + 1],
                             out.switch_gate[:, :t + 1], atol=1e-6)
  assert not np.allclose(out_later.switch_gate[:, t + 1:],
                         out.switch_gate[:, t + 1:])
  np.testing.assert_array_equal(out.switch_gate[:, 0], 1.0)
  # The segmentation itself (the posterior) does read the future.
  assert not np.allclose(out_later.segment_mask, out.segment_mask)


def test_adapter_steps_equal_the_parallel_forward():
  model, params, apply = _model()
  obs, valid, _, _ = _inputs()
  starts = np.zeros((B, T), bool)
  starts[:, 0] = True
  starts[0, [2, 3, 6, 8]] = True     # one start past the cap of 4 segments
  starts[1, [4]] = True
  out = apply(params, obs, valid, None, None, jnp.asarray(starts))
  per_step = cl.step_controller(out.segment_mask, out.controller)
  index = np.asarray(out.segment_mask).argmax(1)               # [B, T]
  adapter = compile_adapter.CompileAdapter(model, max_segments=N)
  switch, advance = jax.jit(adapter.switch), jax.jit(adapter.advance)
  state = adapter.initial_state(B)
  rng = np.random.default_rng(5)
  e = jnp.asarray(rng.standard_normal((B, 1, model.config.width)),
                  jnp.float32)
  for t in range(T):
    beta = np.asarray(switch(params, state, obs[:, t]))
    expected = np.asarray(out.switch_gate[:, t])
    capped = np.asarray(state.segments) >= N
    np.testing.assert_allclose(beta[~capped], expected[~capped], atol=1e-5)
    np.testing.assert_array_equal(beta[capped], 0.0)
    z = np.asarray(out.latent_code)[np.arange(B), index[:, t]]
    state, factors = advance(params, state, obs[:, t], jnp.asarray(z),
                             jnp.asarray(starts[:, t]))
    for f, g in zip(factors, per_step):
      np.testing.assert_allclose(f, g[:, t], atol=1e-5)
    # Same edit of the residual stream.
    np.testing.assert_allclose(
        adapter.intervention(factors).apply(e),
        model.intervention(tuple(g[:, t:t + 1] for g in per_step)).apply(e),
        atol=1e-5)
  np.testing.assert_array_equal(state.segments, [4, 2, 1])
  # Reset restarts an episode: β = 1 and an empty cache.
  state = adapter.reset(state, jnp.asarray([True, False, False]))
  beta = np.asarray(switch(params, state, obs[:, 0]))
  assert beta[0] == 1.0
  np.testing.assert_allclose(beta[0], out.switch_gate[0, 0])


def test_encoder_can_start_from_the_lower_half():
  c = _config(encoder_init='base_model')
  trainer = ct.make_trainer(c)
  base = _pretrain_state().params
  params = ct.copy_lower_half(
      _model()[1], base, trainer.model.config.layer)
  obs, _, _, _ = _inputs()
  h = trainer.model.apply(params, obs,
                          method=lambda m, o: m.encoder(o)[0])
  e, _, _ = trainer.base_model.apply(base, obs, trainer.model.config.layer,
                                     method=BaseModel.lower)
  np.testing.assert_allclose(h, e, atol=1e-5)


# --------------------------------------------------------------------------
# Training (test preset).


def _fake_pretrained(config, workdir):
  ckpt = pretrain.checkpointer(config, workdir)
  ckpt.maybe_save(config.pretrain.num_steps, _pretrain_state(), force=True)
  ckpt.close()
  return _pretrain_state().params


def test_loss_decreases_on_a_fixed_batch():
  c = _config()
  trainer = ct.make_trainer(c)
  base = _pretrain_state().params
  state = trainer.init(jax.random.key(0), base, 0.1, 0.1)
  batch = stream.stream_from_config(c, 'expert', batch_size=8)(
      jax.random.key(3))
  rng = np.random.default_rng(0)
  gumbel = jnp.asarray(rng.gumbel(size=(8, N - 1, batch.valid.shape[1] + 1)),
                       jnp.float32)
  noise = jnp.zeros((8, N, trainer.model.config.latent_dim))
  tx = optax.adam(1e-2)
  loss = functools.partial(trainer.loss, base_params=base, batch=batch,
                           gumbel=gumbel, noise=noise, z_weight=0.1,
                           b_weight=0.1)

  @jax.jit
  def run(params):
    def step(carry, _):
      params, opt = carry
      (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(
          params)
      updates, opt = tx.update(grads, opt, params)
      return (optax.apply_updates(params, updates), opt), (
          value, metrics['action_nll'])
    _, values = jax.lax.scan(step, (params, tx.init(params)), None,
                             length=60)
    return values
  values, nll = map(np.asarray, run(state.params))
  assert np.all(np.isfinite(values))
  assert values[-5:].mean() < values[0] - 0.05, values
  assert nll[-5:].mean() < nll[0] - 0.01, nll


def test_kl_delay_prices_nothing_then_both_kls():
  # kl_delay = 5 of the test preset's 10 steps, no warm-up: the first chunk
  # follows the NLL alone, the second the full objective.
  c = _config(kl_delay=5)
  trainer = ct.make_trainer(c)
  base = _pretrain_state().params
  state = ckpt_lib.on_device(trainer.init(jax.random.key(0), base, 0.1, 0.1))
  base = ckpt_lib.on_device(base)
  state, first = trainer.train_chunk(state, base)
  assert float(first['kl_ramp_now']) == 0.0
  assert float(first['kl_z']) > 0
  np.testing.assert_allclose(float(first['loss']),
                             float(first['action_nll']), rtol=1e-6)
  state, second = trainer.train_chunk(state, base)
  assert float(second['kl_ramp_now']) == 1.0
  assert float(second['loss']) > float(second['action_nll'])
  # The state keeps the target weights; the ramp is a function of the step.
  assert float(state.z_weight) == pytest.approx(0.1)


def test_training_freezes_base_model_and_resumes(tmp_path):
  c = _config()
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  with pytest.raises(FileNotFoundError, match='checkpoints/pretrain'):
    ct.train(c, straight)
  base = _fake_pretrained(c, straight)
  _fake_pretrained(c, resumed)
  before = jax.tree.map(np.array, base)

  summary = ct.train(c, straight)
  jax.tree.map(np.testing.assert_array_equal, before,
               pretrain.load_params(c, straight))
  jax.tree.map(np.testing.assert_array_equal, before, base)
  phi, theta = ct.load_params(c, straight)
  jax.tree.map(np.testing.assert_array_equal, before, theta)
  ckpt = ct.checkpointer(c, straight)
  leaves = ckpt.read_meta(ckpt.latest_step())['leaves']
  ckpt.close()
  assert leaves and not any('base_model' in k for k in leaves)
  for k in ('heldout/f1', 'heldout/causal_f1', 'heldout/action_nll',
            'heldout/kl_z_per_episode'):
    assert np.isfinite(summary[k]), k
  out_dir = os.path.join(straight, 'compile')
  assert os.path.exists(os.path.join(out_dir, 'segmentation.json'))
  assert reports.compile_traces(c, straight) == os.path.join(
      out_dir, 'beta_traces.png')
  assert os.path.exists(os.path.join(out_dir, 'beta_traces.png'))
  assert os.path.exists(os.path.join(straight, 'metrics', 'compile.jsonl'))

  ct.train(_config(num_steps=5), resumed, run_eval=False)
  ct.train(c, resumed, run_eval=False)
  jax.tree.map(np.testing.assert_array_equal, phi,
               ct.load_params(c, resumed)[0])
  with pytest.raises(ckpt_lib.CheckpointMismatchError,
                     match='compile.z_kl_weight'):
    ct.train(_config(z_kl_weight=0.5), straight, run_eval=False)


# --------------------------------------------------------------------------
# Config validation.


@pytest.mark.parametrize('field,value', [
    ('compile.max_segments', 1),
    ('compile.latent_dim', 0),
    ('compile.temperature', 0.0),
    ('compile.prior_rate', 1.0),
    ('compile.z_kl_weight', -0.1),
    ('compile.b_kl_weight', -1.0),
    ('compile.encoder_init', 'pretrained'),
    ('compile.layer', 0),
    ('compile.layer', 3),
    ('compile.rank', 1000),
    ('compile.num_steps', 7),
    ('compile.seq_len', 101),
    ('compile.rl_max_segments', -1),
    ('compile.kl_delay', -1),
    ('compile.kl_warmup', 11),
])
def test_config_errors_name_the_field(field, value):
  c = gridworld.get_config('test')
  section, name = field.split('.')
  c[section][name] = value
  with pytest.raises(config_utils.ConfigError,
                     match=field.replace('.', r'\.')):
    config_lib.build(c)


@pytest.mark.parametrize('preset', ['paper', 'cpu', 'test'])
def test_presets_validate(preset):
  c = config_lib.build(gridworld.get_config(preset))
  assert c.compile.max_segments == 4 and c.compile.latent_dim == 8
  if preset == 'paper':
    assert c.compile.num_steps == 32_000
