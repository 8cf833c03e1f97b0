"""Tests of the run infrastructure: resumable checkpoints, metrics, progress, config checks."""

import dataclasses
import io
import json
import logging as py_logging
import os

from flax import struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from irl.train import loop
from irl.utils import config_utils
from irl.utils import (
    CheckpointMismatchError,
    Checkpointer,
    ConfigError,
    MetricsWriter,
    Progress,
    check,
    check_choice,
    check_int,
    check_range,
    config_fingerprint,
    read_jsonl,
    save_config,
    select_preset,
)
from irl.utils.checkpoint import UNRECORDED

FINGERPRINT = {'model': {'num_layers': 2, 'd_model': 3}, 'pretrain': {'lr': 0.1}}


# --------------------------------------------------------------------------- #
# A tiny "training" run: noisy adam on a quadratic.
# --------------------------------------------------------------------------- #


@struct.dataclass
class TrainState:
  params: dict
  opt_state: optax.OptState
  step: jax.Array
  rng: jax.Array


_TX = optax.adam(0.1)


def _init_state(typed_key: bool, dim: int = 3) -> TrainState:
  params = {'w': jnp.zeros(dim), 'b': jnp.zeros(())}
  rng = jax.random.key(0) if typed_key else jax.random.PRNGKey(0)
  return TrainState(params, _TX.init(params), jnp.zeros((), jnp.int32), rng)


@jax.jit
def _update(state: TrainState) -> tuple[TrainState, jax.Array]:
  rng, noise_rng = jax.random.split(state.rng)
  # The target depends on the key so a wrongly restored key changes the params.
  target = 1.0 + 0.1 * jax.random.normal(noise_rng, state.params['w'].shape)

  def loss_fn(p):
    return jnp.sum((p['w'] - target) ** 2) + (p['b'] - 2.0) ** 2

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = _TX.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return TrainState(params, opt_state, state.step + 1, rng), loss


def _train(workdir, until: int, typed_key: bool, save_every: int = 5, close: bool = True):
  """Runs (or resumes) training up to `until`; returns (state, start_step)."""
  ckpt = Checkpointer(
      os.path.join(workdir, 'checkpoints', 'pretrain'), save_every=save_every, fingerprint=FINGERPRINT
  )
  state, start = ckpt.restore_or_init(_init_state(typed_key))
  writer = MetricsWriter(workdir, 'pretrain', resume_step=start)
  for step in range(start + 1, until + 1):
    state, loss = _update(state)
    writer.write_scalars(step, {'loss': loss})
    ckpt.maybe_save(step, state)
  if close:
    ckpt.close()
    writer.close()
  else:  # simulate a kill: committed saves are on disk, nothing else is cleaned up
    ckpt.wait()
    writer.flush()
  return state, start


@pytest.mark.parametrize('typed_key', [True, False], ids=['typed_key', 'raw_key'])
def test_interrupted_run_resumes_bit_identically(tmp_path, typed_key):
  full, start = _train(tmp_path / 'full', 20, typed_key)
  assert start == 0

  _train(tmp_path / 'resumed', 12, typed_key, close=False)
  resumed, start = _train(tmp_path / 'resumed', 20, typed_key)
  assert start == 10  # last multiple of save_every before the kill at 12

  full_leaves = jax.tree.leaves(_as_raw(full))
  resumed_leaves = jax.tree.leaves(_as_raw(resumed))
  assert len(full_leaves) == len(resumed_leaves)
  for a, b in zip(full_leaves, resumed_leaves):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(resumed.step) == 20
  if typed_key:
    assert jax.dtypes.issubdtype(resumed.rng.dtype, jax.dtypes.prng_key)

  # Steps 11-12 of the killed run were dropped, then rewritten once.
  full_log = read_jsonl(tmp_path / 'full' / 'metrics' / 'pretrain.jsonl')
  resumed_log = read_jsonl(tmp_path / 'resumed' / 'metrics' / 'pretrain.jsonl')
  assert [r['step'] for r in resumed_log] == list(range(1, 21))
  assert [r['loss'] for r in resumed_log] == [r['loss'] for r in full_log]


def _as_raw(state: TrainState) -> TrainState:
  return state.replace(rng=jax.random.key_data(state.rng)) if jax.dtypes.issubdtype(
      state.rng.dtype, jax.dtypes.prng_key) else state


def test_no_checkpoint_returns_init_state(tmp_path):
  ckpt = Checkpointer(tmp_path / 'ckpt', save_every=5, fingerprint=FINGERPRINT)
  init = _init_state(True)
  state, start = ckpt.restore_or_init(init)
  assert start == 0 and state is init and ckpt.latest_step() is None
  ckpt.close()


def test_maybe_save_policy_and_max_to_keep(tmp_path):
  state = _init_state(False)
  with Checkpointer(tmp_path / 'ckpt', save_every=5, max_to_keep=2, fingerprint=FINGERPRINT) as ckpt:
    saved = [s for s in range(1, 13) if ckpt.maybe_save(s, state)]
    assert saved == [5, 10]
    assert ckpt.maybe_save(12, state, force=True)
    assert not ckpt.maybe_save(12, state, force=True)  # already on disk
    ckpt.wait()
    assert ckpt.all_steps() == [10, 12]
    assert ckpt.latest_step() == 12


def test_fingerprint_mismatch_names_fields(tmp_path):
  _train(tmp_path, 5, typed_key=False)
  other = {'model': {'num_layers': 4, 'd_model': 3}, 'pretrain': {'lr': 0.1, 'batch': 8}}
  ckpt = Checkpointer(tmp_path / 'checkpoints' / 'pretrain', save_every=5, fingerprint=other)
  with pytest.raises(CheckpointMismatchError) as e:
    ckpt.restore_or_init(_init_state(False))
  msg = str(e.value)
  assert 'model.num_layers: checkpoint=2, config=4' in msg
  assert 'pretrain.batch: checkpoint=<missing>, config=8' in msg
  assert 'd_model' not in msg
  assert '--workdir' in msg
  assert isinstance(e.value, ValueError)
  ckpt.close()


def test_field_added_to_the_fingerprint_keeps_old_checkpoints(tmp_path):
  """A checkpoint written before a field joined the fingerprint loads under
  the value it was trained with, and only under that value."""
  _train(tmp_path, 5, typed_key=False)
  grown = {**FINGERPRINT, 'data': {'episodes_per_row': 1}}
  added = {'data.episodes_per_row': 1}
  directory = tmp_path / 'checkpoints' / 'pretrain'
  ckpt = Checkpointer(directory, save_every=5, fingerprint=grown,
                      added_fields=added)
  _, step = ckpt.restore_or_init(_init_state(False))
  assert step == 5
  ckpt.close()
  other = {**FINGERPRINT, 'data': {'episodes_per_row': 2}}
  for kwargs in ({'added_fields': added}, {}):
    ckpt = Checkpointer(directory, save_every=5,
                        fingerprint=other if kwargs else grown, **kwargs)
    with pytest.raises(CheckpointMismatchError,
                       match='data.episodes_per_row: checkpoint=<missing>'):
      ckpt.restore_or_init(_init_state(False))
    ckpt.close()


def test_field_added_unrecorded_keeps_old_checkpoints_and_checks_new(tmp_path):
  """A field whose value old checkpoints never recorded (UNRECORDED) lets
  them load under any value; a checkpoint written since records it and
  refuses another."""
  _train(tmp_path, 5, typed_key=False)
  added = {'pretrain.num_steps': UNRECORDED}
  directory = tmp_path / 'checkpoints' / 'pretrain'
  for steps in (100, 200):
    grown = {**FINGERPRINT, 'pretrain': {'lr': 0.1, 'num_steps': steps}}
    ckpt = Checkpointer(directory, save_every=5, fingerprint=grown,
                        added_fields=added)
    _, step = ckpt.restore_or_init(_init_state(False))
    assert step == 5
    ckpt.close()
  recorded = tmp_path / 'recorded'
  grown = {**FINGERPRINT, 'pretrain': {'lr': 0.1, 'num_steps': 100}}
  ckpt = Checkpointer(recorded, save_every=5, fingerprint=grown,
                      added_fields=added)
  state, _ = ckpt.restore_or_init(_init_state(False))
  ckpt.maybe_save(5, state, force=True)
  ckpt.close()
  other = {**FINGERPRINT, 'pretrain': {'lr': 0.1, 'num_steps': 200}}
  ckpt = Checkpointer(recorded, save_every=5, fingerprint=other,
                      added_fields=added)
  with pytest.raises(CheckpointMismatchError,
                     match='pretrain.num_steps: checkpoint=100, config=200'):
    ckpt.restore_or_init(_init_state(False))
  ckpt.close()


def test_shape_mismatch_names_leaf_path(tmp_path):
  _train(tmp_path, 5, typed_key=False)
  ckpt = Checkpointer(tmp_path / 'checkpoints' / 'pretrain', save_every=5, fingerprint=FINGERPRINT)
  with pytest.raises(CheckpointMismatchError) as e:
    ckpt.restore_or_init(_init_state(False, dim=4))
  msg = str(e.value)
  assert ".params['w']: checkpoint=float32(3,), init_state=float32(4,)" in msg
  assert ".opt_state[0].mu['w']" in msg
  with pytest.raises(CheckpointMismatchError, match=r"\.rng: checkpoint=uint32\(2,\), init_state=key<fry>\(\)"):
    ckpt.restore_or_init(_init_state(True))
  ckpt.close()


def test_half_written_checkpoint_is_ignored(tmp_path):
  directory = tmp_path / 'ckpt'
  state = _init_state(False)
  with Checkpointer(directory, save_every=5, fingerprint=FINGERPRINT) as ckpt:
    ckpt.maybe_save(5, state)
  # What a run killed during the save of step 10 leaves behind.
  partial = directory / '10.orbax-checkpoint-tmp'
  (partial / 'state').mkdir(parents=True)
  (partial / 'state' / 'garbage').write_bytes(b'\x00' * 7)
  with Checkpointer(directory, save_every=5, fingerprint=FINGERPRINT) as ckpt:
    assert ckpt.latest_step() == 5
    _, start = ckpt.restore_or_init(state)
    assert start == 5
  assert not partial.exists()


# --------------------------------------------------------------------------- #
# Metrics.
# --------------------------------------------------------------------------- #


def test_metrics_writer_jsonl_tb_and_summary(tmp_path):
  with MetricsWriter(tmp_path, 'probe') as w:
    w.write_scalars(1, {'loss': jnp.float32(0.5), 'acc': np.float64(0.25), 'n': 3, 'lr': 1e-3})
    w.write_scalars(2, {'loss': jnp.array([0.25])})
    with pytest.raises(ValueError, match="'v' must be a scalar"):
      w.write_scalars(3, {'v': jnp.zeros(2)})
    w.write_summary({'final_loss': jnp.float32(0.25), 'curve': np.arange(3)})
  records = read_jsonl(tmp_path / 'metrics' / 'probe.jsonl')
  assert [r['step'] for r in records] == [1, 2]
  assert records[0]['loss'] == 0.5 and records[0]['acc'] == 0.25 and records[0]['n'] == 3
  assert isinstance(records[0]['wall_time'], float)
  events = os.listdir(tmp_path / 'tb' / 'probe')
  assert events and all(f.startswith('events.out.tfevents') for f in events)
  assert os.path.getsize(tmp_path / 'tb' / 'probe' / events[0]) > 0
  summary = json.loads((tmp_path / 'metrics' / 'probe_summary.json').read_text())
  assert summary == {'final_loss': 0.25, 'curve': [0, 1, 2]}


def test_metrics_resume_drops_records_after_checkpoint(tmp_path):
  with MetricsWriter(tmp_path, 'rl') as w:
    for step in range(1, 8):
      w.write_scalars(step, {'x': float(step)})
  path = tmp_path / 'metrics' / 'rl.jsonl'
  with open(path, 'a') as f:
    f.write('{"step": 8, "wall_ti')  # killed mid-write
  with MetricsWriter(tmp_path, 'rl', resume_step=5) as w:
    assert [r['step'] for r in read_jsonl(path)] == [1, 2, 3, 4, 5]
    w.write_scalars(6, {'x': 60.0})
  records = read_jsonl(path)
  assert [r['step'] for r in records] == [1, 2, 3, 4, 5, 6]
  assert records[-1]['x'] == 60.0
  # The killed run's TensorBoard file is kept; TensorBoard purges its later steps.
  assert len(os.listdir(tmp_path / 'tb' / 'rl')) == 2


def test_read_jsonl_rejects_corruption_in_the_middle(tmp_path):
  path = tmp_path / 'bad.jsonl'
  path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
  with pytest.raises(ValueError, match='bad.jsonl:2'):
    read_jsonl(path)


# --------------------------------------------------------------------------- #
# Progress.
# --------------------------------------------------------------------------- #


def test_progress_logs_without_tty(caplog):
  caplog.set_level(py_logging.INFO)
  with Progress(10, start=2, desc='pretrain', use_bar=False, log_every_secs=0.0) as p:
    for step in range(3, 11):
      p.update(step, {'loss': jnp.float32(0.125), 'acc': 1})
  lines = [r.getMessage() for r in caplog.records if 'pretrain: step' in r.getMessage()]
  assert len(lines) == 8
  assert lines[-1].startswith('pretrain: step 10/10 (100.0%)')
  assert 'steps/s' in lines[-1] and 'loss=0.125 acc=1' in lines[-1]


def test_progress_bar_shows_metrics_and_final_step():
  out = io.StringIO()
  p = Progress(5, desc='probe', use_bar=True, refresh_secs=3600.0, file=out)
  for step in range(1, 6):
    p.update(step, {'loss': 0.5})
  p.close()
  text = out.getvalue()
  assert '5/5' in text and 'loss=0.5' in text


# --------------------------------------------------------------------------- #
# Config helpers.
# --------------------------------------------------------------------------- #


def test_config_checks_name_field_value_and_allowed():
  with pytest.raises(ConfigError) as e:
    check_choice('lstm', 'model.backbone', ['transformer', 'hawk'])
  assert str(e.value) == "config.model.backbone='lstm' is invalid: must be one of ['transformer', 'hawk']"
  assert check_choice('hawk', 'model.backbone', ('transformer', 'hawk')) == 'hawk'

  with pytest.raises(ConfigError, match=r"config\.rl\.gamma=1\.5 is invalid: must be in \[0, 1\)"):
    check_range(1.5, 'rl.gamma', 0, 1, hi_inclusive=False)
  with pytest.raises(ConfigError, match=r'config\.lr=0\.0 is invalid: must be > 0'):
    check_range(0.0, 'lr', lo=0, lo_inclusive=False)
  with pytest.raises(ConfigError, match='must be in'):
    check_range(float('nan'), 'lr', 0, 1)
  assert check_range(1, 'rl.gamma', 0, 1) == 1

  with pytest.raises(ConfigError, match=r"config\.batch_size=True is invalid: must be an integer >= 1 \(got type bool\)"):
    check_int(True, 'batch_size', minimum=1)
  with pytest.raises(ConfigError, match=r'config\.batch_size=0 is invalid: must be an integer >= 1'):
    check_int(0, 'batch_size', minimum=1)
  with pytest.raises(ConfigError, match='got type float'):
    check_int(2.0, 'batch_size')
  assert check_int(np.int64(4), 'batch_size', minimum=1) == 4

  with pytest.raises(ConfigError, match=r'config\.model\.num_heads is invalid: must divide model\.d_model'):
    check(False, 'model.num_heads', 'must divide model.d_model')
  check(True, 'model.num_heads', 'unused')
  assert issubclass(ConfigError, ValueError)


def test_select_preset():
  presets = {'tiny': lambda: 'T', 'paper': lambda: 'P'}
  assert select_preset(presets, 'paper') == 'P'
  with pytest.raises(ConfigError, match=r"unknown config preset 'huge'; known presets: \['paper', 'tiny'\]"):
    select_preset(presets, 'huge')


def _config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict({'backbone': 'hawk', 'widths': (8, 16), 'd_model': np.int64(8)})
  c.pretrain = ml_collections.ConfigDict({'lr': 1e-3, 'seq_len': 64, 'num_steps': 1000})
  return c


def test_config_fingerprint_and_save(tmp_path):
  c = _config()
  fp = config_fingerprint(c, ['model', 'pretrain.seq_len'])
  assert fp == {'model': {'backbone': 'hawk', 'widths': [8, 16], 'd_model': 8}, 'pretrain': {'seq_len': 64}}
  json.dumps(fp)
  with pytest.raises(ConfigError, match=r"config\.pretrain\.nope does not exist"):
    config_fingerprint(c, ['pretrain.nope'])
  assert config_fingerprint(c, ['model', 'pretrain'], exclude=['pretrain.lr', 'model.widths']) == {
      'model': {'backbone': 'hawk', 'd_model': 8}, 'pretrain': {'seq_len': 64, 'num_steps': 1000}}
  with pytest.raises(ConfigError, match=r"cannot exclude config\.pretrain\.lr"):
    config_fingerprint(c, ['model'], exclude=['pretrain.lr'])

  # A fingerprint taken from a config round-trips through a checkpoint.
  with Checkpointer(tmp_path / 'ckpt', save_every=1, fingerprint=fp) as ckpt:
    ckpt.maybe_save(1, {'w': jnp.ones(2)})
  with Checkpointer(tmp_path / 'ckpt', save_every=1, fingerprint=config_fingerprint(c, ['model', 'pretrain.seq_len'])) as ckpt:
    state, start = ckpt.restore_or_init({'w': jnp.zeros(2)})
  assert start == 1 and float(state['w'][0]) == 1.0

  path = save_config(c, tmp_path)
  assert json.loads(open(path).read())['pretrain']['seq_len'] == 64
  c.pretrain.num_steps = 2000
  save_config(c, tmp_path)
  assert json.loads(open(path).read())['pretrain']['num_steps'] == 2000
  previous = [f for f in os.listdir(tmp_path) if f.startswith('config.') and f != 'config.json']
  assert len(previous) == 1  # the first run's config is kept


# --------------------------------------------------------------------------- #
# The one train-state type.
# --------------------------------------------------------------------------- #


@struct.dataclass
class _LegacyMetacontrollerState:
  """The layout the metacontroller's own state dataclass had before
  `loop.TrainState` (its checkpoints are still on users' disks)."""
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  key: jax.Array
  kl_weight: jax.Array


def _legacy_and_new(alpha: float):
  params = {'w': jnp.arange(3.0)}
  args = (jnp.int32(7), params, _TX.init(params), jax.random.key(3))
  return (_LegacyMetacontrollerState(*args, kl_weight=jnp.float32(alpha)),
          loop.TrainState(*args, kl_weight=jnp.float32(alpha)))


def test_train_state_extras_are_leaves_under_their_own_names():
  _, state = _legacy_and_new(0.1)
  assert float(state.kl_weight) == pytest.approx(0.1)
  with pytest.raises(AttributeError, match='kl_weight'):
    state.z_weight
  # Extras are leaves: one jitted step serves every α, and vmap batches them.
  bump = jax.jit(lambda s: s.replace(kl_weight=s.kl_weight * 2))
  assert float(bump(state).kl_weight) == pytest.approx(0.2)
  with pytest.raises(TypeError, match='z_weight'):
    state.replace(z_weight=1.0)
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(state)[0]]
  assert '.kl_weight' in paths and ".params['w']" in paths
  # apply_gradients: one optimiser step, the step counter and `changes`.
  grads = {'w': jnp.ones(3)}
  new = state.apply_gradients(_TX, grads, key=jax.random.key(4))
  assert int(new.step) == 8 and float(new.kl_weight) == pytest.approx(0.1)
  assert not np.allclose(new.params['w'], state.params['w'])


def test_legacy_state_checkpoint_restores_into_train_state(tmp_path):
  legacy, new = _legacy_and_new(0.3)
  ckpt = Checkpointer(tmp_path / 'ckpt', save_every=1, fingerprint=FINGERPRINT)
  ckpt.maybe_save(7, legacy, force=True)
  ckpt.close()
  ckpt = Checkpointer(tmp_path / 'ckpt', save_every=1, fingerprint=FINGERPRINT)
  _, template = _legacy_and_new(0.0)
  restored, step = ckpt.restore_or_init(template)
  ckpt.close()
  assert step == 7 and type(restored) is type(new)
  assert float(restored.kl_weight) == pytest.approx(0.3)
  for a, b in zip(jax.tree.leaves(_as_raw_key(restored)),
                  jax.tree.leaves(_as_raw_key(new))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _as_raw_key(state):
  return state.replace(key=jax.random.key_data(state.key))


def test_from_section_builds_a_hashable_dataclass_and_names_missing_fields():
  @dataclasses.dataclass(frozen=True)
  class Section:
    width: int
    blocks: tuple = ()
    rank: int | None = 16

  section = ml_collections.ConfigDict(
      {'width': 8, 'blocks': [0, 1], 'rank': 0, 'seed': 3})
  built = config_utils.from_section(Section, section, rank=None)
  assert built == Section(8, (0, 1), None) and hash(built)
  with pytest.raises(TypeError, match=r"\['blocks', 'rank'\]"):
    config_utils.from_section(Section, {'width': 8})
  assert config_utils.from_section(
      Section, {'width': 8}, optional=('blocks', 'rank')) == Section(8)
