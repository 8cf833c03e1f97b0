"""The end-to-end pipeline behind `experiments/reproduce.py`.

Phases, in order (each reads what the earlier ones wrote to the workdir):

  expert           the arena's expert, Brax's PPO (irl/train/arena_expert.py);
                   only for a config with an `expert` section
  pretrain         base model (irl/train/pretrain.py) + its evaluation
  probes           linear subgoal probes, Fig. 3 (irl/analysis/probes.py, fig3.py)
  controllability  ground-truth controllers, Fig. 4 (irl/analysis/controllability.py)
  metacontroller   the method's metacontroller and the two baseline variants
                   (β ≡ 1; co-trained θ), Fig. 6 (irl/train/metacontroller.py,
                   figures by irl/analysis/reports.py)
  code_injection   the paper's code transfer: a subgoal's code injected into
                   the base model, and the codes composed in the post-training
                   task's order (irl/analysis/code_injection.py)
  compile          the CompILE baseline (irl/train/compile.py)
  internal_rl      internal RL and the four baselines, Fig. 8 (irl/rl/,
                   irl/analysis/fig8.py)

A finished phase writes `<workdir>/pipeline/<phase>.json` (its summary and the
config it ran with); a rerun skips it. Every phase also resumes on its own from
its checkpoints, so a killed pipeline continues inside the phase it was in.
At the end `<workdir>/REPORT.md` collects the numbers and the figures
(`irl/analysis/report.py`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from absl import logging

from irl import config as config_lib
from irl.analysis import report
from irl.config import Config
from irl.utils import checkpoint as ckpt_lib
from irl.utils import config_utils

PHASES = report.PHASES
# Phases of the arena only (a config with an `expert` section): the
# gridworld's expert needs no training. (Code transfer, which the paper
# reports on the ant, runs on both: on the gridworld it measures whether the
# codes compose into the post-training task before internal RL tries to.)
ARENA_PHASES = ('expert',)

def pretrain_depth_variants(config: Config, workdir: str) -> list[str]:
  """Pretrains (resuming) every base model of `control.depths` other than
  the main one into `<workdir>/depth_<L>/`, for Fig. 4's depth axis; returns
  the workdirs trained or found."""
  from irl.analysis import controllability
  from irl.train import pretrain
  done = []
  for depth in sorted({int(d) for d in config.control.depths}):
    wd = controllability.depth_workdir(config, workdir, depth)
    if wd == workdir:
      continue
    cfg = controllability.depth_config(config, depth)
    try:
      pretrain.load_params(cfg, wd)
    except FileNotFoundError:
      logging.info('pretraining the depth-%d base model in %s for %d steps',
                   depth, wd, cfg.pretrain.num_steps)
      pretrain.train(cfg, wd, run_eval=False)
    done.append(wd)
  return done


def _expert(config, workdir):
  from irl.analysis import trajectories
  from irl.train import arena_expert
  summary = arena_expert.train(config, workdir)
  trajectories.expert_figure(config, workdir)
  return summary


def _pretrain(config, workdir):
  from irl.train import pretrain
  summary = pretrain.train(config, workdir)
  if 'expert' in config:   # the arena: its paths, top-down
    from irl.analysis import trajectories
    trajectories.base_model_figure(
        config, workdir, pretrain.make_pretrainer(config).model,
        pretrain.load_params(config, workdir))
  return summary


def _probes(config, workdir):
  from irl.analysis import fig3
  return fig3.run(config, workdir)


def _controllability(config, workdir):
  from irl.analysis import controllability
  # The pipeline sweeps the layers of the main model only; the depth axis of
  # Fig. 4 pretrains more models (experiments/controllability.py).
  config = config_lib.replace(config, {
      'control.depths': (config.model.num_layers,)})
  return controllability.run(config, workdir)


def _metacontroller(config, workdir):
  from irl.analysis import reports
  from irl.train import metacontroller
  summaries = {}
  for name in metacontroller.VARIANTS:
    variant = metacontroller.variant_config(config, name)
    summaries[name] = metacontroller.train(variant, workdir)
    reports.metacontroller_traces(variant, workdir)
  return summaries


def _code_injection(config, workdir):
  from irl.analysis import code_injection
  return code_injection.run(config, workdir)


def _compile(config, workdir):
  from irl.analysis import reports
  from irl.train import compile as compile_lib
  summary = compile_lib.train(config, workdir)
  reports.compile_traces(config, workdir)
  return summary


def _internal_rl(config, workdir):
  from irl.analysis import fig8
  return fig8.run(config, workdir)


_RUNNERS: dict[str, Callable[[Config, str], Any]] = {
    'expert': _expert, 'pretrain': _pretrain, 'probes': _probes,
    'controllability': _controllability, 'metacontroller': _metacontroller,
    'code_injection': _code_injection,
    'compile': _compile, 'internal_rl': _internal_rl,
}


# Config sections each phase's outputs depend on: a finished phase is skipped
# only if these are unchanged (editing a later phase's settings keeps it).
_BASE_SECTIONS = ('seed', 'env', 'expert', 'data', 'model', 'pretrain',
                  'eval')
PHASE_SECTIONS = {
    'expert': ('env', 'expert'),
    'pretrain': _BASE_SECTIONS,
    'probes': _BASE_SECTIONS + ('probe',),
    'controllability': _BASE_SECTIONS + ('control',),
    'metacontroller': _BASE_SECTIONS + ('metacontroller', 'rl'),
    'code_injection': _BASE_SECTIONS + ('metacontroller', 'control'),
    'compile': _BASE_SECTIONS + ('compile',),
    'internal_rl': _BASE_SECTIONS + ('metacontroller', 'compile', 'rl'),
}


def _config_json(config: Config, phase: str) -> Any:
  full = config_utils.to_jsonable(config_lib.build(config))
  for field in config_utils.LOCATION_FIELDS:  # where, not what
    full['env'].pop(field, None)
  return {k: full.get(k) for k in PHASE_SECTIONS[phase]}


def added_fields() -> dict[str, Any]:
  """Config fields added after markers may have been written, with the
  value those runs had (as JSON): a marker without one matches that value
  (`checkpoint.fingerprint_diff`, as for checkpoints)."""
  from irl.rl import train as rl_train
  from irl import optim
  fields = {**rl_train.ADDED_FIELDS, **optim.added_fields('probe'),
            **optim.added_fields('control'), 'eval.temperature': 1.0}
  return json.loads(json.dumps(fields))


def check_phases(phases: list[str]) -> list[str]:
  for phase in phases:
    if phase not in PHASES:
      raise config_utils.ConfigError(
          f'--phases lists {phase!r}, which is not a phase; the phases are '
          f'{",".join(PHASES)}')
  return [p for p in PHASES if p in phases]


def run(config: Config, workdir: str,
        phases: list[str] | None = None) -> dict[str, Any]:
  """Runs (or skips, when already done) every phase; writes REPORT.md."""
  phases = check_phases(list(phases or PHASES))
  config = config_lib.locate(config, workdir)
  if 'expert' not in config:
    phases = [p for p in phases if p not in ARENA_PHASES]
  os.makedirs(os.path.join(workdir, 'pipeline'), exist_ok=True)
  config_utils.save_config(config, workdir)
  results = {}
  for phase in phases:
    marker = report.marker_path(workdir, phase)
    if os.path.exists(marker):
      done = config_utils.read_json(marker)
      now = _config_json(config, phase)
      stored = {k: done['config'].get(k) for k in PHASE_SECTIONS[phase]}
      diff = ckpt_lib.fingerprint_diff(stored, now, added_fields())
      changed = sorted({line.split(':')[0].split('.')[0] for line in diff})
      if changed:
        raise ValueError(
            f'{marker} was written with another config (changed: '
            f'{", ".join("config." + k for k in changed)}); use a fresh '
            '--workdir, or delete the marker to redo the phase.')
      logging.info('pipeline: %s already done (%.0f s), skipping', phase,
                   done['seconds'])
      results[phase] = done
      continue
    logging.info('pipeline: %s', phase)
    t0 = time.time()
    summary = _RUNNERS[phase](config, workdir)
    done = {'phase': phase, 'seconds': time.time() - t0,
            'summary': config_utils.to_jsonable(summary, strict=False),
            'config': _config_json(config, phase)}
    config_utils.write_json(marker, done)
    logging.info('pipeline: %s done in %.0f s', phase, done['seconds'])
    results[phase] = done
  report.write_report(config, workdir)
  return results
