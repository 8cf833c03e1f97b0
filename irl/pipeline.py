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
                   the base model (irl/analysis/code_injection.py); arena only
  compile          the CompILE baseline (irl/train/compile.py)
  internal_rl      internal RL and the four baselines, Fig. 8 (irl/rl/,
                   irl/analysis/fig8.py)

A finished phase writes `<workdir>/pipeline/<phase>.json` (its summary and the
config it ran with); a rerun skips it. Every phase also resumes on its own from
its checkpoints, so a killed pipeline continues inside the phase it was in.
At the end `<workdir>/REPORT.md` collects the numbers and the figures.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from absl import logging

from irl import config as config_lib
from irl.config import Config
from irl.rl import methods as rl_methods
from irl.utils import checkpoint as ckpt_lib
from irl.utils import config_utils

PHASES = ('expert', 'pretrain', 'probes', 'controllability', 'metacontroller',
          'code_injection', 'compile', 'internal_rl')
# Phases of the arena only (a config with an `expert` section): the
# gridworld's expert needs no training, and the paper reports code transfer
# on the ant.
ARENA_PHASES = ('expert', 'code_injection')

# Metacontroller variants the RL baselines need: name -> config overrides
# (a value, or a function of the config).
METACONTROLLER_VARIANTS = {
    'method': {},
    'no_temporal_abstraction': {'switching': 'always'},
    # docs/method.md §8.4 (grid: θ from scratch); rl.cotrained_base_model picks.
    'cotrained': {'base_model': lambda c: c.rl.cotrained_base_model},
}


def variant_config(config: Config, variant: str) -> Config:
  """`config` with the metacontroller overrides of `variant`."""
  config = config_lib.build(config)
  return config_lib.replace(config, {
      f'metacontroller.{key}': value(config) if callable(value) else value
      for key, value in METACONTROLLER_VARIANTS[variant].items()})


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
  for name in METACONTROLLER_VARIANTS:
    variant = variant_config(config, name)
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


def _marker(workdir: str, phase: str) -> str:
  return os.path.join(workdir, 'pipeline', f'{phase}.json')


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
    marker = _marker(workdir, phase)
    if os.path.exists(marker):
      with open(marker) as f:
        done = json.load(f)
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
    config_utils.atomic_write_text(marker, json.dumps(done, indent=2) + '\n')
    logging.info('pipeline: %s done in %.0f s', phase, done['seconds'])
    results[phase] = done
  write_report(config, workdir)
  return results


# --------------------------------------------------------------------------
# REPORT.md

def load_markers(workdir: str) -> dict[str, dict]:
  out = {}
  for phase in PHASES:
    path = _marker(workdir, phase)
    if os.path.exists(path):
      with open(path) as f:
        out[phase] = json.load(f)
  return out


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:.4g}'
  return str(value)


def _table(rows: list[tuple[str, Any]]) -> list[str]:
  lines = ['| quantity | value |', '|---|---|']
  lines += [f'| {k} | {_fmt(v)} |' for k, v in rows]
  return lines


def _figure(workdir: str, relpath: str, caption: str) -> list[str]:
  if os.path.exists(os.path.join(workdir, relpath)):
    return [f'![{caption}]({relpath})', '']
  return []


def _pick(summary: dict, keys: list[str]) -> list[tuple[str, Any]]:
  return [(k, summary[k]) for k in keys if k in summary]


def link_rows(done: dict) -> list[tuple[str, str, str, str]]:
  """(link, measured, target of the cpu preset, paper) for every link of
  the chain that has finished."""
  rows = []
  get = lambda phase: done.get(phase, {}).get('summary', {})
  s = get('pretrain')
  if 'closed_loop/complete_pretrain_task' in s:
    rows.append(('base model: completes a pretraining task in closed loop',
                 _fmt(s['closed_loop/complete_pretrain_task']), '>= 0.95',
                 'not reported (256k steps × 1024 episodes)'))
  s = get('probes')
  if 'best_accuracy' in s:
    rows.append((
        'probes: best layer (L), accuracy (majority)',
        f"{s['best_layer']} ({s['num_layers']}), {_fmt(s['best_accuracy'])} "
        f"({_fmt(s['majority_accuracy'])})",
        '>= L/2, >= 2x majority', '~0.5 from mid-depth on (~0.3 below)'))
  s = get('controllability')
  if 'mid_layer_success' in s:
    by_layer = s['success'][str(s['main_depth'])]
    rows.append((
        'ground-truth controllers: post-task success at L/2 (by layer)',
        f"{_fmt(s['mid_layer_success'])} ("
        + ', '.join(_fmt(by_layer[k]) for k in sorted(by_layer, key=int))
        + ')', '>= 0.5; L/2 >= first and last layer',
        'highest near the middle layer'))
  s = get('metacontroller')
  for name, target in (('method', '>= 0.9 and code >= 0.8'),
                       ('cotrained', 'clearly below the method')):
    if name in s:
      m = s[name]
      rows.append((
          f'metacontroller ({name}): held-out F1, code names the subgoal '
          '(chance)',
          f"{_fmt(m.get('heldout/f1', float('nan')))}, "
          f"{_fmt(m.get('heldout/code_subgoal_acc', float('nan')))} "
          f"({_fmt(m.get('heldout/code_subgoal_chance', float('nan')))})",
          target, 'aligned switching (frozen); one switch at t=0 '
          '(co-trained)'))
  final = get('internal_rl').get('final_success', {})
  for method, r in final.items():
    rows.append((f'RL: {method}, median final success',
                 _fmt(r['median']),
                 '>= 0.7' if method == 'internal' else '<= 0.1',
                 'high' if method == 'internal' else 'near 0'))
  return rows


def write_report(config: Config, workdir: str) -> str:
  """Writes `<workdir>/REPORT.md` from the phases finished so far."""
  done = load_markers(workdir)
  lines = [f'# Internal RL: pipeline report ({config.preset} preset)', '',
           f'Workdir `{workdir}`. Phases finished: '
           f'{", ".join(done) or "none"}.', '']
  links = link_rows(done)
  if links:
    lines += ['## The chain at a glance', '',
              '| link | measured | target (cpu preset) | paper |',
              '|---|---|---|---|']
    lines += [f'| {a} | {b} | {c} | {d} |' for a, b, c, d in links] + ['']
  timing = [(p, f"{done[p]['seconds'] / 60:.1f} min") for p in done]
  if timing:
    total = sum(done[p]['seconds'] for p in done)
    lines += ['## Time per phase', ''] + _table(
        timing + [('total', f'{total / 60:.1f} min')]) + ['']

  if 'expert' in done:
    s = done['expert']['summary']
    lines += ['## The expert (docs/method.md §3)', '',
              'Brax\'s PPO; its mean action on 1 episode of each layout. The '
              'arena\'s RL results are read against its post-task success.',
              ''] + _table(_pick(s, ['success_pretrain', 'success_post',
                                     'train_seconds'])) + ['']
    lines += _figure(workdir, 'expert/trajectories.png',
                     'the expert\'s paths, top-down')
  if 'pretrain' in done:
    s = done['pretrain']['summary']
    lines += ['## Base model (docs/method.md §4)', ''] + _table(_pick(s, [
        'num_steps', 'train_seconds_this_run', 'heldout/action_acc',
        'heldout/ceiling_action_acc', 'heldout/optimal_move_acc',
        'heldout/action_nll', 'heldout/ceiling_action_nll',
        'heldout/action_mse', 'closed_loop/complete_pretrain_task',
        'closed_loop/pretrain_success', 'closed_loop/post_task_success'])
    ) + ['']
    lines += _figure(workdir, 'eval/trajectories.png',
                     'the base model\'s paths in closed loop, top-down')
  if 'probes' in done:
    s = done['probes']['summary']
    lines += ['## Probes (Fig. 3)', ''] + _table(_pick(s, [
        'best_layer', 'best_accuracy', 'majority_accuracy']) + [
            ('accuracy by layer', ', '.join(
                f'{a:.3f}' for a in s.get('accuracy_by_layer', [])))]) + ['']
    lines += _figure(workdir, 'probe/fig3_probe_accuracy.png',
                     'probe accuracy by layer')
  if 'controllability' in done:
    s = done['controllability']['summary']
    lines += ['## Ground-truth controllers (Fig. 4)', '',
              'Post-task success by base-model depth (rows) and controlled '
              'layer (columns); "none" is the base model uncontrolled.', '']
    layers = sorted({int(l) for row in s['success'].values() for l in row})
    lines += ['| depth | none | ' + ' | '.join(f'layer {l}' for l in layers)
              + ' |', '|---' * (len(layers) + 2) + '|']
    for depth, row in sorted(s['success'].items(), key=lambda kv: int(kv[0])):
      base = s.get('base_success', {}).get(depth, '')
      cells = [_fmt(base)] + [_fmt(row.get(str(l), '')) for l in layers]
      lines.append(f'| {depth} | ' + ' | '.join(cells) + ' |')
    lines.append('')
    lines += _figure(workdir, 'control/success_by_layer.png',
                     'post-task success by controlled layer')
    lines += _figure(workdir, 'control/fig4_controllability.png',
                     'Fig. 4: post-task success by depth and layer')
  if 'metacontroller' in done:
    lines += ['## Metacontroller (Figs. 6, 7)', '',
              '| variant | F1 | precision | recall | median switches | '
              'median true boundaries | action NLL | KL | '
              'code names the subgoal (chance) |',
              '|---|---|---|---|---|---|---|---|---|']
    for name, s in done['metacontroller']['summary'].items():
      g = lambda k: _fmt(s.get(f'heldout/{k}', float('nan')))
      lines.append(
          f"| {name} | {g('f1')} | {g('precision')} | {g('recall')} | "
          f"{g('median_switches_per_episode')} | "
          f"{g('median_boundaries_per_episode')} | {g('action_nll')} | "
          f"{g('kl')} | {g('code_subgoal_acc')} ({g('code_subgoal_chance')}) |")
    lines.append('')
    # Fig. 7 is its own job (experiments/rate_distortion.py, same workdir).
    lines += _figure(workdir, 'rate_distortion/rate_distortion.png',
                     'Fig. 7: rate-distortion, frozen vs co-trained')
    from irl.train import metacontroller
    for name in METACONTROLLER_VARIANTS:
      run_name = metacontroller.run_name(variant_config(config, name))
      lines += _figure(workdir, f'{run_name}/beta_traces.png',
                       f'β traces ({name})')
  if 'code_injection' in done:
    s = done['code_injection']['summary']
    lines += ['## Code transfer (docs/method.md §6)', '',
              'Success with a subgoal\'s mean code injected into the base '
              'model, against the same episodes without it.', '',
              '| measurement | without | with the code |', '|---|---|---|',
              f"| reach subgoal k first (k uniform per episode) | "
              f"{_fmt(s['reach_none'])}"
              f" | {_fmt(s['reach_code'])} |"]
    for g, r in s['reach_subgoal'].items():
      lines.append(f"| reach subgoal {g} first | {_fmt(r['none'])} | "
                   f"{_fmt(r['code'])} |")
    if 'force' in s:
      f = s['force']
      lines.append(f"| post task {f['post_task']}, forcing the unseen "
                   f"{f['transition']} | {_fmt(f['none'])} | "
                   f"{_fmt(f['code'])} |")
    lines.append('')
  if 'compile' in done:
    s = done['compile']['summary']
    lines += ['## CompILE baseline', ''] + _table(
        [(k, v) for k, v in s.items() if k.startswith('heldout/')]) + ['']
  if 'internal_rl' in done:
    s = done['internal_rl']['summary']
    lines += ['## Internal RL and baselines (Fig. 8)', '']
    rows = s.get('final_success', {})
    if rows:
      norm = s.get('expert_success_post')
      lines += ['| method | median final success | 25% | 75% | episodes |'
                + (' / expert\'s |' if norm else ''),
                '|---|---|---|---|---|' + ('---|' if norm else '')]
      for method, r in rows.items():
        lines.append(f"| {method} | {_fmt(r['median'])} | {_fmt(r['q25'])} "
                     f"| {_fmt(r['q75'])} | {r['episodes']} |"
                     + (f" {_fmt(r['normalised_median'])} |" if norm else ''))
      if norm:
        lines.append(f'\nThe expert\'s post-task success: {_fmt(norm)}.')
      lines.append('')
    lines += _figure(workdir, f'{rl_methods.fig8_dir(config)}/fig8_success.png',
                     'success vs episodes')
    lines += _figure(
        workdir, f'{rl_methods.fig8_dir(config)}/fig8_success_normalised.png',
        'success vs episodes, normalised by the expert\'s')
  shown = {l[l.index('](') + 2:-1] for l in lines if l.startswith('![')}
  others = sorted(
      os.path.relpath(os.path.join(d, f), workdir)
      for d, _, files in os.walk(workdir) for f in files
      if f.endswith('.png'))
  others = [p for p in others if p not in shown]
  if others:
    lines += ['## Every other figure of this workdir', '']
    for rel in others:
      lines += _figure(workdir, rel, rel)
  path = os.path.join(workdir, 'REPORT.md')
  config_utils.atomic_write_text(path, '\n'.join(lines) + '\n')
  return path
