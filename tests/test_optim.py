"""Learning-rate schedules of every trainer (irl/optim.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import gridworld
from irl import optim
from irl.train import metacontroller as mct
from irl.train import pretrain
from irl.utils.config_utils import ConfigError

SECTIONS = ('pretrain', 'probe', 'control', 'metacontroller', 'compile', 'rl')


def _rates(fn, steps):
  return np.array([float(fn(i)) for i in steps])


def test_schedule_shapes():
  np.testing.assert_allclose(
      _rates(optim.schedule(2.0, 'wsd', 100, 10, 20),
             [0, 5, 10, 50, 80, 90, 100]),
      [0.0, 1.0, 2.0, 2.0, 2.0, 1.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(
      _rates(optim.schedule(2.0, 'cosine', 100), [0, 50, 100]),
      [2.0, 1.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(
      _rates(optim.schedule(2.0, 'constant', 100, 4), [0, 2, 4, 99]),
      [0.0, 1.0, 2.0, 2.0], atol=1e-6)
  # A decay as long as the run: no stable phase.
  np.testing.assert_allclose(
      _rates(optim.schedule(1.0, 'wsd', 10, 0, 10), [0, 5, 10]),
      [1.0, 0.5, 0.0], atol=1e-6)


def test_every_trainer_has_the_fields_and_defaults_to_constant():
  for preset in ('paper', 'cpu', 'test'):
    c = gridworld.get_config(preset)
    for name in SECTIONS:
      assert c[name].lr_schedule == 'constant', (preset, name)
      assert c[name].lr_warmup_steps == 0 and c[name].lr_decay_steps == 0


def test_constant_is_the_plain_adamw():
  c = gridworld.get_config('test').pretrain
  params = {'w': jnp.arange(3.0)}
  grads = {'w': jnp.array([0.3, -1.0, 2.0])}
  ours, plain = optim.section_optimizer(c, 10), optax.chain(
      optax.clip_by_global_norm(c.grad_clip),
      optax.adamw(c.learning_rate, weight_decay=c.weight_decay))
  a, _ = ours.update(grads, ours.init(params), params)
  b, _ = plain.update(grads, plain.init(params), params)
  np.testing.assert_array_equal(a['w'], b['w'])


@pytest.mark.parametrize('field,value,match', [
    ('lr_schedule', 'linear', "'constant', 'cosine', 'wsd'"),
    ('lr_warmup_steps', -1, '>= 0'),
    ('lr_decay_steps', 3, "lr_schedule='wsd' only"),
])
def test_bad_fields_are_named(field, value, match):
  for name in SECTIONS:
    c = gridworld.get_config('test')
    c[name][field] = value
    with pytest.raises(ConfigError, match=f'{name}.{field}.*{match}'):
      _validate(c, name)


def test_wsd_needs_a_decay_that_fits():
  for name in SECTIONS:
    c = gridworld.get_config('test')
    c[name].lr_schedule = 'wsd'
    with pytest.raises(ConfigError, match=f'{name}.lr_decay_steps'):
      _validate(c, name)


def _validate(c, name):
  from irl import config as config_lib
  config_lib.build(c)


def test_decaying_trainers_are_keyed_on_their_length():
  # Constant: one compilation serves every run length. A decaying schedule
  # depends on the length, so the shared factories must tell them apart.
  c = gridworld.get_config('test')
  a, b = c.copy_and_resolve_references(), c.copy_and_resolve_references()
  b.pretrain.num_steps = 40
  assert pretrain.make_pretrainer(a) is pretrain.make_pretrainer(b)
  for cfg in (a, b):
    cfg.pretrain.lr_schedule = 'cosine'
  assert pretrain.make_pretrainer(a) is not pretrain.make_pretrainer(b)
  m1, m2 = c.copy_and_resolve_references(), c.copy_and_resolve_references()
  m2.metacontroller.num_steps = 20
  for cfg in (m1, m2):
    cfg.metacontroller.lr_schedule = 'wsd'
    cfg.metacontroller.lr_decay_steps = 5
  assert mct.make_trainer(m1) is not mct.make_trainer(m2)


def test_wsd_pretraining_learns():
  c = gridworld.get_config('test')
  c.pretrain.num_steps = 60
  c.pretrain.lr_schedule = 'wsd'
  c.pretrain.lr_warmup_steps = 5
  c.pretrain.lr_decay_steps = 20
  c.pretrain.learning_rate = 3e-3
  trainer = pretrain.make_pretrainer(c)
  state = trainer.init(jax.random.key(0))
  losses = []
  for _ in range(c.pretrain.num_steps // c.pretrain.log_every):
    state, metrics = trainer.train_chunk(state)
    losses.append(float(metrics['loss']))
  assert losses[-1] < losses[0] - 0.05, losses
