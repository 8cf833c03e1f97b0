"""Data parallelism (irl/utils/parallel.py): 8 emulated CPU devices against
this process's one, a checkpoint moved from 8 devices to 1, the error for a
batch that does not split, and writing from process 0 only."""

import os
import shutil

import jax
import numpy as np
import pytest

import parallel_run
from irl import config as config_lib
from irl.train import pretrain
from irl.utils import config_utils
from irl.utils import parallel


@pytest.fixture(scope='module')
def one_device(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('one_device'))
  return workdir, parallel_run.run_phases(workdir)


@pytest.fixture(scope='module')
def eight_devices():
  return parallel_run.eight_device_result()


def test_eight_devices_equal_one(one_device, eight_devices):
  one, eight = one_device[1], eight_devices[1]
  assert int(one['devices']) == 1 and int(eight['devices']) == 8
  # On 8 devices a batch is split over all of them and θ is on each whole.
  assert list(eight['layout']) == [8, False, 8, True]
  assert list(one['layout']) == [1, True, 1, True]
  assert sorted(one) == sorted(eight)
  for phase in ('pretrain', 'metacontroller', 'rl'):
    assert any(k.startswith(f'{phase}/param') for k in one)
    assert any(k.startswith(f'{phase}/metric_loss') or
               k.startswith(f'{phase}/metric_policy_loss') for k in one)
  # The RL gradient is not zero, so its parameters moved.
  assert float(np.max(one['rl/metric_grad_norm'])) > 0
  for key in sorted(set(one) - {'devices', 'layout'}):
    np.testing.assert_allclose(eight[key], one[key], rtol=1e-5, atol=1e-5,
                               err_msg=key)


def test_checkpoint_from_eight_devices_resumes_on_one(
    one_device, eight_devices, tmp_path):
  # Step 5 of the 8-device pretraining, continued to 10 here on one device.
  src = os.path.join(eight_devices[0], 'checkpoints', 'pretrain')
  dst = os.path.join(tmp_path, 'checkpoints', 'pretrain')
  shutil.copytree(src, dst)
  shutil.rmtree(os.path.join(dst, '10'))
  c = parallel_run.config()
  summary = pretrain.train(c, str(tmp_path), run_eval=False)
  assert summary['resumed_from'] == 5 and summary['num_steps'] == 10
  leaves = jax.tree.leaves(pretrain.load_params(c, str(tmp_path)))
  for i, leaf in enumerate(leaves):
    np.testing.assert_allclose(np.asarray(leaf),
                               one_device[1][f'pretrain/param_{i}'],
                               rtol=1e-5, atol=1e-5)


def test_batch_that_does_not_split_is_refused(monkeypatch):
  monkeypatch.setattr(parallel, 'num_devices', lambda: 8)
  c = parallel_run.config()
  c.data.batch_size = 12
  with pytest.raises(config_utils.ConfigError,
                     match=r'config\.data\.batch_size=12 does not split over '
                           r'the 8 devices of this run: use a multiple of 8'):
    config_lib.build(c)
  c.data.batch_size = 16
  config_lib.build(c)


def test_only_process_zero_writes(monkeypatch, tmp_path):
  monkeypatch.setattr(parallel, 'process_index', lambda: 1)
  assert not parallel.is_writer()
  c = parallel_run.config()
  c.pretrain.num_steps = 5
  pretrain.train(c, str(tmp_path), run_eval=False)
  # Checkpoints are orbax's (every process takes part); nothing else.
  assert sorted(os.listdir(tmp_path)) == ['checkpoints']
  assert os.listdir(tmp_path / 'checkpoints' / 'pretrain') == ['5']
