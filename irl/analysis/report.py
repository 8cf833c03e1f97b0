"""`<workdir>/REPORT.md`: the numbers and figures of the pipeline's finished
phases (`irl.pipeline`), with the chain's links beside their targets.
"""

from __future__ import annotations

import json
import os
from typing import Any

from irl.config import Config
from irl.rl import methods as rl_methods
from irl.utils import config_utils

# The pipeline's phases in order (`irl.pipeline` runs them). A finished phase
# leaves `<workdir>/pipeline/<phase>.json`: its summary, seconds and config.
PHASES = ('expert', 'pretrain', 'probes', 'controllability', 'metacontroller',
          'code_injection', 'compile', 'internal_rl')


def marker_path(workdir: str, phase: str) -> str:
  return os.path.join(workdir, 'pipeline', f'{phase}.json')


def load_markers(workdir: str) -> dict[str, dict]:
  """phase -> its marker, for the phases finished in `workdir`, in order."""
  out = {}
  for phase in PHASES:
    path = marker_path(workdir, phase)
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
  compose = get('code_injection').get('compose', {})
  scales = [k for k in compose if k.startswith('x')]
  if scales:
    rows.append((
        "codes composed: post-task success with each subgoal's code while "
        f"it is pursued (at {', '.join(k[1:] + '×' for k in scales)} its "
        'length)', ', '.join(_fmt(compose[k]) for k in scales),
        'no target (what internal RL could compose)', 'not reported'))
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
    for name in metacontroller.VARIANTS:
      run_name = metacontroller.run_name(
          metacontroller.variant_config(config, name))
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
    if 'compose' in s:
      c = s['compose']
      for key in (k for k in c if k.startswith('x')):
        scale = '' if key == 'x1' else f' at {key[1:]}× their length'
        lines.append(f"| post task {c['post_task']}, each subgoal's code "
                     f"while it is pursued{scale} | {_fmt(c['none'])} | "
                     f"{_fmt(c[key])} |")
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
