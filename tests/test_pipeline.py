"""The reproduce pipeline: phase order, skipping finished phases, the report."""

import dataclasses
import json
import os

import pytest

from configs import gridworld
from irl import config as config_lib
from irl import pipeline
from irl.analysis import report as report_lib
from irl.rl import methods as rl_methods
from irl.train import metacontroller as mct
from irl.utils import config_utils


def test_unknown_phase_names_the_allowed_ones():
  with pytest.raises(config_utils.ConfigError, match="--phases lists 'nope'"):
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

  # A marker written before fields were added still matches their value.
  older = json.loads(json.dumps(done))
  del older['config']['eval']['temperature']
  del older['config']['model']['attention_window_blocks']
  del older['config']['pretrain']['lr_schedule']
  with open(marker, 'w') as f:
    json.dump(older, f)
  pipeline.run(config, workdir, ['pretrain'])
  assert calls == [1]                      # still skipped

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
  always = mct.variant_config(config, 'no_temporal_abstraction')
  cotrained = mct.variant_config(config, 'cotrained')
  assert always.metacontroller.switching == 'always'
  assert cotrained.metacontroller.base_model == config.rl.cotrained_base_model
  # The RL methods read exactly these variants.
  for method in ('internal', 'no_temporal_abstraction', 'cotrained'):
    variant = 'method' if method == 'internal' else method
    rl = rl_methods.method_config(config, method)
    assert rl.metacontroller == mct.variant_config(
        config, variant).metacontroller, method
  # A method's variant is pinned, whatever the config's own fields say.
  other = config_lib.replace(config, {'metacontroller.base_model': 'cotrain'})
  assert mct.variant_config(other, 'method').metacontroller.base_model == (
      'frozen')
  assert config.metacontroller.switching == 'learned'   # not mutated
  assert always.model == config_lib.build(config).model
  assert dataclasses.replace(always.metacontroller, switching='learned') == (
      config_lib.build(config).metacontroller)


def test_report_puts_every_link_beside_its_target(tmp_path):
  # Markers as the phases write them (summaries only): the report's first
  # table lists each finished link with its measured value and target.
  config = gridworld.get_config('test')
  done = {
      'pretrain': {'closed_loop/complete_pretrain_task': 0.9},
      'probes': {'best_layer': 1, 'num_layers': 2, 'best_accuracy': 0.7,
                 'majority_accuracy': 0.25},
      'controllability': {'main_depth': 2, 'mid_layer': 1,
                          'mid_layer_success': 0.4,
                          'success': {'2': {'0': 0.1, '1': 0.4, '2': 0.0}}},
      'metacontroller': {'method': {'heldout/f1': 0.95,
                                    'heldout/code_subgoal_acc': 0.85,
                                    'heldout/code_subgoal_chance': 0.25},
                         'cotrained': {'heldout/f1': 0.2}},
      'code_injection': {'reach_subgoal': {}, 'reach_none': 0.25,
                         'reach_code': 0.9,
                         'compose': {'post_task': '0-1-2-3', 'none': 0.0,
                                     'x1': 0.1, 'x1.5': 0.4, 'x2': 0.2}},
      'internal_rl': {'final_success': {
          'internal': {'median': 0.75, 'q25': 0.7, 'q75': 0.8, 'episodes': 64},
          'raw_action': {'median': 0.0, 'q25': 0.0, 'q75': 0.0,
                         'episodes': 64}}},
  }
  os.makedirs(tmp_path / 'pipeline')
  for phase, summary in done.items():
    config_utils.atomic_write_text(
        str(tmp_path / 'pipeline' / f'{phase}.json'),
        json.dumps({'phase': phase, 'seconds': 60.0, 'summary': summary,
                    'config': {}}))
  report = open(report_lib.write_report(config, str(tmp_path))).read()
  table = report.split('## The chain at a glance')[1].split('\n## ')[0]
  rows = [l for l in table.splitlines() if l.startswith('| ') and
          not l.startswith('| link')]
  assert len(rows) == 8, rows
  assert ("while it is pursued (at 1×, 1.5×, 2× its length) | 0.1, 0.4, 0.2 "
          '| no target (what internal RL could compose) |') in table
  assert '| 0.4 (0.1, 0.4, 0) | >= 0.5; L/2 >= first and last layer |' in table
  assert 'RL: internal, median final success | 0.75 | >= 0.7' in table
  assert 'RL: raw_action, median final success | 0 | <= 0.1' in table
  assert '0.95, 0.85 (0.25)' in table
  # Fig. 4's numbers as a table, not JSON; a figure no section names is
  # still shown.
  assert '| depth | none | layer 0 | layer 1 | layer 2 |' in report
  assert '| 2 |  | 0.1 | 0.4 | 0 |' in report
  assert '```' not in report


def test_report_shows_every_figure_of_the_workdir(tmp_path):
  config = gridworld.get_config('test')
  os.makedirs(tmp_path / 'probe')
  os.makedirs(tmp_path / 'control' / 'depth_2')
  for rel in ('probe/fig3_probe_accuracy.png', 'control/depth_2/extra.png'):
    open(tmp_path / rel, 'wb').close()
  report = open(report_lib.write_report(config, str(tmp_path))).read()
  assert report.count('](control/depth_2/extra.png)') == 1
  assert '](probe/fig3_probe_accuracy.png)' in report
