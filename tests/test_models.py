"""Behaviour of the base models: decoding, splitting, interventions, learning.

Tiny configs only; each compiled function is built once per backbone and
shared between tests. Bit-exact comparisons run both sides eagerly (same ops,
same kernels); jitted comparisons use float32 tolerances, because XLA's fusion
may change the last ulp between two different programs.
"""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from irl.models import (RGLRU, BaseModel, Intervention, ModelConfig,
                        causal_relative_position_bucket, init_cache,
                        reset_cache)

BATCH, SEQ, OBS_DIM, WIDTH, LAYERS, NUM_ACTIONS = 2, 10, 6, 32, 2, 3
BACKBONES = ('transformer', 'hawk')
ATOL = RTOL = 1e-5
# The intervention the paper uses with each backbone (grid: rank 16 with the
# Transformer; ant: full rank with Hawk).
PAPER_KIND = {'transformer': 'low_rank', 'hawk': 'full'}

# These tests compile many tiny one-off programs; LLVM optimisation would
# only cost compile time (it halves it on 2 cores), not change what is tested.
_jit = functools.partial(
    jax.jit, compiler_options={'xla_backend_optimization_level': 0})


def _config(backbone: str, **overrides) -> ModelConfig:
  # Small buckets so that T <= 12 reaches T5's log-spaced buckets too.
  kwargs = dict(backbone=backbone, num_layers=LAYERS, width=WIDTH,
                num_heads=4, mlp_dim=64, obs_dim=OBS_DIM,
                num_actions=NUM_ACTIONS, num_buckets=8, max_distance=10,
                max_len=12)
  kwargs.update(overrides)
  return ModelConfig(**kwargs)


@functools.lru_cache(maxsize=None)
def _setup(backbone: str):
  """(model, initial params, test params, jitted forward) for one backbone.

  Test params are the initial ones plus noise, so that every parameter
  matters (e.g. the relative-position bias, which starts at zero).
  """
  model = BaseModel(_config(backbone))
  params = _jit(model.init)(jax.random.PRNGKey(0), _obs())
  rng = np.random.default_rng(0)
  test_params = jax.tree.map(
      lambda x: jnp.asarray(x + 0.2 * rng.standard_normal(x.shape), x.dtype),
      params)
  return model, params, test_params, _jit(model.apply)


def _obs(seed: int = 1) -> jax.Array:
  return jax.random.normal(jax.random.PRNGKey(seed), (BATCH, SEQ, OBS_DIM))


def _intervention(kind: str | None, layer: int, seed: int = 2,
                  seq_len: int = SEQ) -> Intervention | None:
  """A random, time-varying intervention (a different U at every step)."""
  if kind is None:
    return None
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  if kind == 'low_rank':
    shape = (BATCH, seq_len, WIDTH, 4)
    return Intervention.low_rank(layer, 0.2 * jax.random.normal(k1, shape),
                                 0.2 * jax.random.normal(k2, shape))
  shape = (BATCH, seq_len, WIDTH, WIDTH)
  return Intervention.full(layer, 0.1 * jax.random.normal(k1, shape))


def _leaves_equal(x, y) -> bool:
  lx, ly = jax.tree.leaves(x), jax.tree.leaves(y)
  return len(lx) == len(ly) and all(
      np.array_equal(a, b) for a, b in zip(lx, ly))


@functools.lru_cache(maxsize=None)
def _stepper(backbone: str):
  """Jitted decoder: one observation per step under lax.scan.

  With an intervention it steps through lower/upper split at its layer, as the
  metacontroller does, so it also checks that the per-layer cache splits.
  """
  model = _setup(backbone)[0]

  def step(params, cache, inputs):
    obs_t, iv_t = inputs
    obs_t = obs_t[:, None]
    if iv_t is None:
      out = model.apply(params, obs_t, cache=cache)
    else:
      iv_t = jax.tree.map(lambda x: x[:, None], iv_t)
      e, lower_residuals, cache = model.apply(
          params, obs_t, iv_t.layer, cache, method=BaseModel.lower)
      out = model.apply(params, e, iv_t.layer, iv_t, cache,
                        method=BaseModel.upper)
      out = out.replace(residuals=jnp.concatenate(
          [lower_residuals[:-1], out.residuals]))
    return out.cache, out.replace(cache=None)

  def run(params, obs, intervention):
    time_major = lambda x: jnp.swapaxes(x, 0, 1)
    xs = (time_major(obs), jax.tree.map(time_major, intervention))
    cache = init_cache(model.config, obs.shape[0])
    _, outs = jax.lax.scan(functools.partial(step, params), cache, xs)
    # Leaves are [T, ..., B, 1, D]; move time next to batch: [..., B, T, D].
    return jax.tree.map(lambda x: jnp.moveaxis(x[..., 0, :], 0, -2), outs)

  return _jit(run)


@pytest.mark.parametrize('backbone,kind', [
    ('transformer', None), ('transformer', 'low_rank'),
    ('hawk', None), ('hawk', 'full')])
def test_stepping_with_cache_matches_parallel_forward(backbone, kind):
  _, _, params, forward = _setup(backbone)
  obs = _obs()
  iv = _intervention(kind, layer=1)
  full = forward(params, obs, iv)
  stepped = _stepper(backbone)(params, obs, iv)
  assert stepped.residuals.shape == full.residuals.shape == (
      LAYERS + 1, BATCH, SEQ, WIDTH)
  for name in ('action_logits', 'obs_pred', 'residuals'):
    np.testing.assert_allclose(getattr(stepped, name), getattr(full, name),
                               atol=ATOL, rtol=RTOL, err_msg=name)


@pytest.mark.parametrize('backbone', BACKBONES)
def test_chunked_prefill_then_continue_matches_parallel_forward(backbone):
  model, _, params, forward = _setup(backbone)
  obs = _obs()
  cache = init_cache(model.config, BATCH)
  assert _leaves_equal(model.init_cache(BATCH), cache)  # Needs no params.
  assert len(cache) == LAYERS
  full = forward(params, obs)
  first = forward(params, obs[:, :4], None, cache)
  second = forward(params, obs[:, 4:], None, first.cache)
  np.testing.assert_allclose(
      jnp.concatenate([first.action_logits, second.action_logits], axis=1),
      full.action_logits, atol=ATOL, rtol=RTOL)
  np.testing.assert_allclose(
      jnp.concatenate([first.residuals, second.residuals], axis=2),
      full.residuals, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize('backbone', BACKBONES)
def test_reset_cache_restarts_only_the_done_elements(backbone):
  # Same shapes as the prefill test, so nothing new is compiled.
  model, _, params, forward = _setup(backbone)
  obs = _obs()
  fresh_cache = init_cache(model.config, BATCH)
  cache = forward(params, obs[:, :4], None, fresh_cache).cache
  cache = reset_cache(cache, jnp.array([True, False]))
  out = forward(params, obs[:, 4:], None, cache)
  restarted = forward(params, obs[:, 4:], None, fresh_cache)
  continued = forward(params, obs)
  np.testing.assert_allclose(out.action_logits[0], restarted.action_logits[0],
                             atol=ATOL, rtol=RTOL)
  np.testing.assert_allclose(out.action_logits[1],
                             continued.action_logits[1, 4:],
                             atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize('backbone', BACKBONES)
@pytest.mark.parametrize('rank', [None, 4])
def test_zero_intervention_is_exactly_no_intervention(backbone, rank):
  model, _, params, forward = _setup(backbone)
  obs = _obs()
  zero = Intervention.zeros(1, BATCH, SEQ, WIDTH, rank=rank)
  assert _leaves_equal(model.apply(params, obs, zero),
                       model.apply(params, obs))
  if (rank is None) == (PAPER_KIND[backbone] == 'full'):  # Compiled already.
    assert _leaves_equal(forward(params, obs, zero),
                         forward(params, obs, None))


@pytest.mark.parametrize('backbone', BACKBONES)
@pytest.mark.parametrize('kind', ['low_rank', 'full'])
def test_intervention_only_changes_layers_from_its_own(backbone, kind):
  model, _, params, _ = _setup(backbone)
  obs = _obs()
  clean = model.apply(params, obs)
  for layer in range(LAYERS + 1):
    edited = model.apply(params, obs, _intervention(kind, layer))
    np.testing.assert_array_equal(edited.residuals[:layer],
                                  clean.residuals[:layer])
    for above in range(layer, LAYERS + 1):
      assert not np.allclose(edited.residuals[above], clean.residuals[above])
    assert not np.allclose(edited.action_logits, clean.action_logits)


@pytest.mark.parametrize('backbone', BACKBONES)
def test_upper_of_lower_equals_full_forward_at_every_layer(backbone):
  model, _, params, _ = _setup(backbone)
  obs = _obs()
  for layer in range(LAYERS + 1):
    for iv in (None, _intervention(PAPER_KIND[backbone], layer)):
      full = model.apply(params, obs, iv)
      e, lower_residuals, _ = model.apply(params, obs, layer,
                                          method=BaseModel.lower)
      assert lower_residuals.shape == (layer + 1, BATCH, SEQ, WIDTH)
      np.testing.assert_array_equal(e, lower_residuals[-1])
      out = model.apply(params, e, layer, iv, method=BaseModel.upper)
      assert out.residuals.shape == (LAYERS - layer + 1, BATCH, SEQ, WIDTH)
      np.testing.assert_array_equal(out.action_logits, full.action_logits)
      np.testing.assert_array_equal(out.obs_pred, full.obs_pred)
      np.testing.assert_array_equal(
          jnp.concatenate([lower_residuals[:-1], out.residuals]),
          full.residuals)


def test_layer_arguments_are_checked():
  model, _, params, _ = _setup('hawk')
  e = jnp.zeros((BATCH, SEQ, WIDTH))
  with pytest.raises(ValueError, match='intervention.layer'):
    model.apply(params, e, 2, _intervention('low_rank', 1),
                method=BaseModel.upper)
  with pytest.raises(ValueError, match='layer'):
    model.apply(params, _obs(), LAYERS + 1, method=BaseModel.lower)
  with pytest.raises(ValueError, match='cache'):
    model.apply(params, _obs(), cache=init_cache(model.config, BATCH)[:1])


@pytest.mark.parametrize('backbone', BACKBONES)
def test_outputs_are_causal(backbone):
  _, _, params, forward = _setup(backbone)
  obs = _obs()
  t = 4
  changed = obs.at[:, t].add(1.0)
  out, out_changed = forward(params, obs), forward(params, changed)
  for name in ('action_logits', 'obs_pred'):
    np.testing.assert_array_equal(getattr(out, name)[:, :t],
                                  getattr(out_changed, name)[:, :t])
    assert not np.allclose(getattr(out, name)[:, t:],
                           getattr(out_changed, name)[:, t:])
  np.testing.assert_array_equal(out.residuals[:, :, :t],
                                out_changed.residuals[:, :, :t])


def _t5_bucket_reference(relative_position, num_buckets=32, max_distance=128):
  """T5's _relative_position_bucket (bidirectional=False), in NumPy."""
  n = np.maximum(-np.asarray(relative_position), 0)
  max_exact = num_buckets // 2
  with np.errstate(all='ignore'):  # log(0) in the branch that is not taken.
    val_if_large = max_exact + (
        np.log(n.astype(np.float64) / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)).astype(np.int64)
  val_if_large = np.minimum(val_if_large, num_buckets - 1)
  return np.where(n < max_exact, n, val_if_large)


def test_relative_position_bucket_matches_t5():
  bucket = _jit(causal_relative_position_bucket, static_argnums=(1, 2))
  relative = np.array([0, -1, -5, -15, -16, -20, -50, -127, -128, -500])
  expected = np.array([0, 1, 5, 15, 16, 17, 24, 31, 31, 31])
  np.testing.assert_array_equal(_t5_bucket_reference(relative), expected)
  np.testing.assert_array_equal(bucket(relative, 32, 128), expected)
  every = -np.arange(0, 600)
  np.testing.assert_array_equal(bucket(every, 32, 128),
                                _t5_bucket_reference(every))
  np.testing.assert_array_equal(bucket(every, 8, 10),
                                _t5_bucket_reference(every, 8, 10))
  # Future offsets (masked anyway) fall in bucket 0.
  np.testing.assert_array_equal(bucket(np.arange(1, 11), 32, 128), 0)


def test_rg_lru_matches_numpy_loop():
  _, init_params, params, _ = _setup('hawk')
  lru_params = {'params': params['params']['blocks_0']['recurrent']['rg_lru']}
  layer = RGLRU(WIDTH, num_heads=4)
  kx, kh = jax.random.split(jax.random.PRNGKey(3))
  x = jax.random.normal(kx, (BATCH, SEQ, WIDTH))
  h0 = jax.random.normal(kh, (BATCH, WIDTH))
  y, h_last = _jit(layer.apply)(lru_params, x, h0)

  sigmoid = lambda v: 1 / (1 + np.exp(-v))
  softplus = lambda v: np.logaddexp(0.0, v)
  # The initialiser puts a = exp(-softplus(Lambda)) in [0.9, 0.999].
  a_init = np.exp(-softplus(np.asarray(
      init_params['params']['blocks_0']['recurrent']['rg_lru']['a_param'],
      np.float64)))
  assert np.all((a_init >= 0.9 - 1e-6) & (a_init <= 0.999 + 1e-6))

  p = jax.tree.map(lambda v: np.asarray(v, np.float64), lru_params['params'])

  def block_diag(v, gate):
    blocks = v.reshape(4, WIDTH // 4)
    return (np.einsum('hi,hij->hj', blocks, gate['kernel'])
            + gate['bias']).reshape(WIDTH)

  xs = np.asarray(x, np.float64)
  expected = np.zeros((BATCH, SEQ, WIDTH))
  for b in range(BATCH):
    h = np.asarray(h0[b], np.float64)
    for t in range(SEQ):
      r = sigmoid(block_diag(xs[b, t], p['a_gate']))
      i = sigmoid(block_diag(xs[b, t], p['input_gate']))
      a = np.exp(-8.0 * softplus(p['a_param']) * r)
      h = a * h + np.sqrt(1 - a**2) * (i * xs[b, t])
      expected[b, t] = h
  np.testing.assert_allclose(y, expected, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(h_last, expected[:, -1], atol=1e-5, rtol=1e-5)


def test_low_rank_intervention_is_a_b_transpose_and_broadcasts():
  ka, kb, ke = jax.random.split(jax.random.PRNGKey(4), 3)
  a = jax.random.normal(ka, (WIDTH, 3))
  b = jax.random.normal(kb, (WIDTH, 3))
  e = jax.random.normal(ke, (BATCH, SEQ, WIDTH))
  u = a @ b.T
  expected = e + jnp.einsum('ij,btj->bti', u, e)
  shared = Intervention.low_rank(0, a, b).apply(e)
  tiled = Intervention.low_rank(
      0, jnp.broadcast_to(a, (BATCH, SEQ, WIDTH, 3)),
      jnp.broadcast_to(b, (BATCH, SEQ, WIDTH, 3))).apply(e)
  full = Intervention.full(0, u).apply(e)
  for got in (shared, tiled, full):
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-5)
  with pytest.raises(ValueError):
    Intervention.low_rank(0, a, b[:, :2])
  with pytest.raises(ValueError, match='width'):
    Intervention.full(0, jnp.zeros((3, 3))).apply(e)


@pytest.mark.parametrize('rank', [3, None])
def test_factored_decoder_intervention_equals_the_built_factors(rank):
  from irl.models import ControllerDecoder  # pylint: disable=g-import-not-at-top
  decoder = ControllerDecoder(width=WIDTH, rank=rank, hidden=5)
  z = jax.random.normal(jax.random.PRNGKey(5), (BATCH, SEQ, 4))
  e = jax.random.normal(jax.random.PRNGKey(6), (BATCH, SEQ, WIDTH))
  params = decoder.init(jax.random.PRNGKey(7), z)
  # The zero-initialised B would make U = 0: randomise every weight.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(8), len(leaves))
  params = jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, x.shape)
                                     for k, x in zip(keys, leaves)])
  assert jax.tree.structure(decoder.init(jax.random.PRNGKey(7), z,
                                         factored=True)) == tree

  def edited(params, e, factored):
    factors = decoder.apply(params, z, factored=factored)
    return decoder.as_intervention(0, factors).apply(e)

  built, factored = edited(params, e, False), edited(params, e, True)
  np.testing.assert_allclose(factored, built, atol=1e-4, rtol=1e-5)
  hyper = decoder.apply(params, z, factored=True)
  np.testing.assert_allclose(
      hyper.factors() if rank else (hyper.matrix(),),
      decoder.apply(params, z), atol=1e-6)
  if rank is None:
    # The full U is the last Dense layer 'u' of the hidden code, reshaped
    # row = output (checkpoints of the built U keep their meaning).
    p = params['params']
    assert p['u']['kernel'].shape == (5, WIDTH * WIDTH)
    assert p['u']['bias'].shape == (WIDTH * WIDTH,)
    h = jax.nn.relu(z @ p['hidden']['kernel'] + p['hidden']['bias'])
    u = (h @ p['u']['kernel'] + p['u']['bias']).reshape(
        z.shape[:-1] + (WIDTH, WIDTH))
    np.testing.assert_allclose(hyper.matrix(), u, atol=1e-5)
    np.testing.assert_allclose(
        decoder.as_intervention(0, hyper).apply(e),
        e + jnp.einsum('btij,btj->bti', u, e), atol=1e-4, rtol=1e-5)
    assert not decoder.as_intervention(0, hyper).is_low_rank
  loss = lambda p, e, f: jnp.sum(jnp.sin(edited(p, e, f)))
  for argnum in (0, 1):
    g_built = jax.grad(loss, argnum)(params, e, False)
    g_fact = jax.grad(loss, argnum)(params, e, True)
    for x, y in zip(jax.tree.leaves(g_fact), jax.tree.leaves(g_built)):
      np.testing.assert_allclose(x, y, atol=1e-3, rtol=1e-4)
  with pytest.raises(ValueError, match='width'):
    decoder.as_intervention(0, hyper).apply(e[..., :-1])


@pytest.mark.parametrize('overrides,field', [
    (dict(backbone='lstm'), 'backbone'),
    (dict(num_layers=0), 'num_layers'),
    (dict(width=30), 'width'),
    (dict(num_heads=0), 'num_heads'),
    (dict(action_type='multi'), 'action_type'),
    (dict(action_type='continuous', action_dim=0), 'action_dim'),
    (dict(num_actions=0), 'num_actions'),
    (dict(dtype='float16'), 'dtype'),
    (dict(num_buckets=32, max_distance=8), 'max_distance'),
    (dict(max_len=0), 'max_len'),
    (dict(future_actions=-1), 'future_actions'),
    (dict(action_type='continuous', future_actions=2), 'future_actions'),
])
def test_config_validation_names_the_field(overrides, field):
  config = dataclasses.replace(_config('transformer'), **overrides)
  with pytest.raises(ValueError, match=field):
    config.validate()
  with pytest.raises(ValueError, match=field):
    jax.eval_shape(BaseModel(config).init, jax.random.PRNGKey(0), _obs())


def test_config_is_hashable_and_frozen():
  config = _config('hawk')
  assert hash(config) == hash(_config('hawk'))
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.width = 8  # type: ignore[misc]


@pytest.mark.parametrize('backbone', BACKBONES)
def test_continuous_head_in_bfloat16(backbone):
  config = _config(backbone, action_type='continuous', action_dim=3,
                   dtype='bfloat16')
  model = BaseModel(config)
  obs = _obs()
  # Parameters are float32 whatever the compute dtype: reuse the float32
  # model's and give it a Gaussian action head (mean and log-std).
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), obs)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(shapes))
  params = _setup(backbone)[2]
  params = {'params': dict(params['params'], action_head={
      'kernel': 3.0 * jax.random.normal(jax.random.PRNGKey(7), (WIDTH, 6)),
      'bias': jnp.zeros(6)})}
  assert (jax.tree.map(lambda x: x.shape, params)
          == jax.tree.map(lambda x: x.shape, shapes))

  @_jit
  def run(params, obs):
    out = model.apply(params, obs)
    step = model.apply(params, obs[:, :1], cache=init_cache(config, BATCH))
    return out, step

  out, step = run(params, obs)
  assert out.action_logits is None
  assert out.action_mean.shape == out.action_log_std.shape == (BATCH, SEQ, 3)
  assert out.action_mean.dtype == out.action_log_std.dtype == jnp.float32
  assert out.obs_pred.shape == (BATCH, SEQ, OBS_DIM)
  assert out.residuals.dtype == jnp.bfloat16
  assert np.all(np.isfinite(out.action_mean))
  log_std = np.asarray(out.action_log_std)
  assert np.all((log_std >= -5) & (log_std <= 2))
  assert np.any(log_std == -5) or np.any(log_std == 2)  # The clip is active.
  fresh = init_cache(config, BATCH)
  assert (jax.tree.map(lambda x: x.dtype, step.cache)
          == jax.tree.map(lambda x: x.dtype, fresh))
  np.testing.assert_allclose(step.action_mean[:, 0], out.action_mean[:, 0],
                             atol=0.1, rtol=0.05)


@pytest.mark.parametrize('backbone', BACKBONES)
def test_tiny_model_fits_tiny_task(backbone):
  # Label = (current + previous observed token) mod 3: needs memory.
  num_seq, steps = 32, 200
  model, params, _, _ = _setup(backbone)  # Real initialisation, width 32.
  tokens = jax.random.randint(jax.random.PRNGKey(5), (num_seq, SEQ), 0,
                              OBS_DIM)
  obs = jax.nn.one_hot(tokens, OBS_DIM)
  previous = jnp.pad(tokens[:, :-1], ((0, 0), (1, 0)))
  labels = (tokens + previous) % NUM_ACTIONS
  optimizer = optax.adam(3e-3)

  def loss_fn(params):
    logits = model.apply(params, obs).action_logits
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean()

  @_jit
  def train(params):
    def update(carry, _):
      params, opt_state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss
    (params, _), losses = jax.lax.scan(
        update, (params, optimizer.init(params)), None, length=steps)
    logits = model.apply(params, obs).action_logits
    return losses, jnp.mean(jnp.argmax(logits, -1) == labels)

  losses, accuracy = train(params)
  assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
  assert accuracy > 0.9, accuracy


@pytest.mark.parametrize('backbone', ['transformer', 'hawk'])
def test_packed_rows_compute_each_episode_as_alone(backbone):
  """segments: a step sees only its own episode (attention masked; the
  RG-LRU and Conv1D restarted), so two episodes in one row give the outputs
  each gives alone, and gradients do not cross the cut."""
  model, _, params, _ = _setup(backbone)
  obs = _obs(7)[:1]                                       # [1, 10, obs]
  cut = 4
  segments = (jnp.arange(SEQ) >= cut).astype(jnp.int32)[None]
  grad = jax.grad(lambda o: model.apply(params, o, segments=segments
                                        ).action_logits[:, cut:].sum())(obs)
  assert not np.any(grad[:, :cut]) and np.any(grad[:, cut:])
  packed = _jit(lambda p, o, s: model.apply(p, o, segments=s))(
      params, obs, segments)
  first = model.apply(params, obs[:, :cut])
  second = model.apply(params, obs[:, cut:])
  np.testing.assert_allclose(packed.action_logits[:, :cut],
                             first.action_logits, atol=ATOL, rtol=RTOL)
  np.testing.assert_allclose(packed.action_logits[:, cut:],
                             second.action_logits, atol=ATOL, rtol=RTOL)
  np.testing.assert_allclose(packed.residuals[:, :, cut:], second.residuals,
                             atol=ATOL, rtol=RTOL)
  # One segment for the whole row is the plain forward.
  whole = model.apply(params, obs, segments=jnp.zeros_like(segments))
  np.testing.assert_allclose(whole.action_logits,
                             model.apply(params, obs).action_logits,
                             atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize('backbone', ['transformer', 'hawk'])
def test_segments_need_no_cache(backbone):
  model, _, params, _ = _setup(backbone)
  segments = jnp.zeros((BATCH, 1), jnp.int32)
  with pytest.raises(ValueError, match='segments'):
    model.apply(params, _obs()[:, :1], cache=init_cache(model.config, BATCH),
                segments=segments)


def test_attention_window_limits_the_past_in_both_paths():
  # With a window of W, steps more than W - 1 back do not change the output,
  # and cached decoding equals the full-sequence forward.
  cfg = dataclasses.replace(_window_config(), attention_window=3)
  model = BaseModel(cfg)
  obs = jax.random.bernoulli(jax.random.key(0), 0.2, (2, 9, cfg.obs_dim)
                             ).astype(jnp.float32)
  params = model.init(jax.random.key(1), obs)
  full = model.apply(params, obs).action_logits
  changed = obs.at[:, :3].set(1.0 - obs[:, :3])
  out = model.apply(params, changed).action_logits
  # Step t sees steps > t - 3 at every layer: 2 layers reach back 4 steps.
  np.testing.assert_allclose(out[:, 7:], full[:, 7:], atol=1e-5)
  assert not np.allclose(out[:, 3:5], full[:, 3:5], atol=1e-4)
  np.testing.assert_allclose(_decoded_logits(model, params, obs), full,
                             atol=1e-4)
  with pytest.raises(ValueError, match='attention_window'):
    dataclasses.replace(cfg, attention_window=-1).validate()


def test_attention_window_blocks_leave_the_other_blocks_whole():
  # W = 1 in every block: each step sees only itself; in block 1 only:
  # block 0 still reads the whole past, and the cached path agrees.
  obs = jax.random.bernoulli(jax.random.key(0), 0.2, (2, 9, 20)
                             ).astype(jnp.float32)
  changed = obs.at[:, :3].set(1.0 - obs[:, :3])
  for blocks, past_matters in (((), False), ((1,), True)):
    cfg = dataclasses.replace(_window_config(), attention_window=1,
                              attention_window_blocks=blocks)
    assert [cfg.window(i) for i in range(2)] == [0 if blocks else 1, 1]
    model = BaseModel(cfg)
    params = model.init(jax.random.key(1), obs)
    full = model.apply(params, obs).action_logits
    out = model.apply(params, changed).action_logits
    assert past_matters != np.allclose(out[:, 3:], full[:, 3:], atol=1e-5)
  np.testing.assert_allclose(_decoded_logits(model, params, obs), full,
                             atol=1e-4)
  with pytest.raises(ValueError, match='attention_window_blocks'):
    dataclasses.replace(cfg, attention_window_blocks=(2,)).validate()


def _decoded_logits(model, params, obs):
  """Action logits [B, T, A] of decoding obs one step at a time (cache)."""
  cache = init_cache(model.config, obs.shape[0])
  steps = []
  for t in range(obs.shape[1]):
    o = model.apply(params, obs[:, t:t + 1], cache=cache)
    cache = o.cache
    steps.append(o.action_logits[:, 0])
  return jnp.stack(steps, 1)


def _window_config():
  return ModelConfig(backbone='transformer', num_layers=2, width=32,
                     num_heads=2, mlp_dim=64, obs_dim=20, max_len=16)


@pytest.mark.parametrize('rank', [3, None])
def test_decoder_init_scale_makes_the_edit_depend_on_the_code(rank):
  from irl.models import ControllerDecoder  # pylint: disable=g-import-not-at-top
  z = jax.random.normal(jax.random.PRNGKey(5), (2, 1, 4))
  # One residual, two codes.
  e = jnp.broadcast_to(jax.random.normal(jax.random.PRNGKey(6), (1, 1, WIDTH)),
                       (2, 1, WIDTH))
  edits = {}
  for scale in (0.0, 1.0):
    decoder = ControllerDecoder(width=WIDTH, rank=rank, hidden=5,
                                init_scale=scale)
    params = decoder.init(jax.random.PRNGKey(7), z)
    edits[scale] = decoder.as_intervention(
        0, decoder.apply(params, z)).apply(e) - e
  # The default starts as the identity edit for every code; a scale > 0
  # gives two codes two different non-zero edits from the first step.
  np.testing.assert_array_equal(edits[0.0], 0.0)
  delta = np.asarray(edits[1.0])
  assert np.all(np.abs(delta).sum(-1) > 1e-3)
  assert not np.allclose(delta[0], delta[1])
