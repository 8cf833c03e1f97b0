"""Checkpointer.restore_at: an older kept step, with the same checks as resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl.utils import CheckpointMismatchError, Checkpointer

FINGERPRINT = {'model': {'width': 3}}


def _state(step):
  return {'w': jnp.full((3,), float(step)), 'step': jnp.int32(step),
          'key': jax.random.key(step)}


def _saved(tmp_path):
  ckpt = Checkpointer(tmp_path / 'ckpt', save_every=1, max_to_keep=3,
                      fingerprint=FINGERPRINT, async_save=False)
  for step in (1, 2, 3, 4):
    ckpt.maybe_save(step, _state(step))
  ckpt.close()


def test_restore_at_returns_that_step(tmp_path):
  _saved(tmp_path)
  with Checkpointer(tmp_path / 'ckpt', save_every=1,
                    fingerprint=FINGERPRINT) as ckpt:
    assert ckpt.all_steps() == [2, 3, 4]
    state = ckpt.restore_at(3, _state(0))
    np.testing.assert_array_equal(state['w'], np.full((3,), 3.0))
    assert int(state['step']) == 3
    np.testing.assert_array_equal(jax.random.key_data(state['key']),
                                  jax.random.key_data(jax.random.key(3)))
    # restore_or_init still gives the latest.
    latest, step = ckpt.restore_or_init(_state(0))
    assert step == 4 and float(latest['w'][0]) == 4.0
    with pytest.raises(FileNotFoundError, match=r'step 1 .*\[2, 3, 4\]'):
      ckpt.restore_at(1, _state(0))


def test_restore_at_checks_fingerprint_and_shapes(tmp_path):
  _saved(tmp_path)
  with Checkpointer(tmp_path / 'ckpt', save_every=1,
                    fingerprint={'model': {'width': 4}}) as ckpt:
    with pytest.raises(CheckpointMismatchError, match='model.width'):
      ckpt.restore_at(2, _state(0))
  with Checkpointer(tmp_path / 'ckpt', save_every=1,
                    fingerprint=FINGERPRINT) as ckpt:
    wrong = dict(_state(0), w=jnp.zeros((5,)))
    with pytest.raises(CheckpointMismatchError, match=r"\['w'\]"):
      ckpt.restore_at(2, wrong)
