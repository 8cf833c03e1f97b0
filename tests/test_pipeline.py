"""The reproduce pipeline: phase order, skipping finished phases, the report."""

import json
import os

import pytest

from configs import gridworld
from irl import pipeline
from irl.utils import config_utils


def test_unknown_phase_names_the_allowed_ones():
  with pytest.raises(config_utils.ConfigError, match='config.phases'):
    pipeline.check_phases(['pretrain', 'nope'])
  assert pipeline.check_phases(['probes', 'pretrain']) == ['pretrain',
                                                           'probes']


def test_pretrain_phase_runs_once_then_is_skipped(tmp_path, monkeypatch):
  config = gridworld.get_config('test')
  workdir = str(tmp_path)
  calls = []
  real = pipeline._RUNNERS['pretrain']

  def counted(config, workdir):
    calls.append(1)
    return real(config, workdir)

  monkeypatch.setitem(pipeline._RUNNERS, 'pretrain', counted)
  first = pipeline.run(config, workdir, ['pretrain'])
  assert calls == [1]
  marker = os.path.join(workdir, 'pipeline', 'pretrain.json')
  with open(marker) as f:
    done = json.load(f)
  assert done['summary']['num_steps'] == config.pretrain.num_steps
  report = open(os.path.join(workdir, 'REPORT.md')).read()
  assert 'Base model' in report and 'closed_loop/complete_pretrain_task' in report

  second = pipeline.run(config, workdir, ['pretrain'])
  assert calls == [1]                      # skipped
  assert second['pretrain']['summary'] == first['pretrain']['summary']

  later = gridworld.get_config('test')       # a later phase's setting only
  later.rl.num_updates = 2 * later.rl.num_updates
  pipeline.run(later, workdir, ['pretrain'])
  assert calls == [1]                      # still skipped

  other = gridworld.get_config('test')
  other.pretrain.learning_rate = 0.5
  with pytest.raises(ValueError, match='config.pretrain'):
    pipeline.run(other, workdir, ['pretrain'])


def test_metacontroller_variants_change_only_their_fields():
  config = gridworld.get_config('test')
  always = pipeline.variant_config(config, 'no_temporal_abstraction')
  cotrained = pipeline.variant_config(config, 'cotrained')
  assert always.metacontroller.switching == 'always'
  assert cotrained.metacontroller.base_model == config.rl.cotrained_base_model
  assert config.metacontroller.switching == 'learned'   # not mutated
  assert always.model.to_dict() == config.model.to_dict()
