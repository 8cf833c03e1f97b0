"""Fig. 8: internal RL against its baselines, success against episodes
(docs/method.md §8), drawn from the RL runs' metrics.

`run(config, workdir)` trains (or resumes, or just reads) every method of
`rl.fig8_methods` over `rl.seeds` through `irl.rl.train.train`, then draws
each method's curve (`run_curve`) and the figure of all of them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from absl import logging

from irl.analysis.figures import plt, save_figure
from irl.config import Config
from irl.rl import methods as rl_methods
from irl.rl import train as rl_train
from irl.utils import checkpoint as ckpt_lib
from irl.utils import config_utils


def write_curve_csv(path: str, curve: dict, batch_size: int) -> None:
  """Rows (update, episodes, seed index, success)."""
  config_utils.write_csv(
      path, ['update', 'episodes', 'seed_index', 'success'],
      ([int(u), int(u) * batch_size, j, f'{v:.6g}']
       for i, u in enumerate(curve['update'])
       for j, v in enumerate(curve['success'][i])))


_STYLES = (('-', 'o'), ('--', 's'), (':', '^'), ('-.', 'v'), ((0, (5, 1)), 'D'))


def plot_curves(path: str, curves: dict[str, tuple[dict, int]],
                log_x: bool = False, title: str = '',
                scale: float = 1.0) -> str:
  """Median and 25–75% band over seeds of success vs episodes, per method
  (left), and each method's final median with its 25–75% range (right), so
  methods whose curves coincide (all at 0, say) stay distinguishable.
  scale: success is divided by it (the expert's, for the arena)."""
  fig, (ax, ax_end) = plt.subplots(
      1, 2, figsize=(8.0, 3.8), gridspec_kw={'width_ratios': [3, 1.3]})
  finals, top = [], 1.0
  for i, (name, (curve, batch_size)) in enumerate(curves.items()):
    if not len(curve['update']):
      continue
    x = curve['update'] * batch_size
    s = curve['success'] / scale
    med = np.nanmedian(s, 1)
    lo, hi = np.nanpercentile(s, 25, 1), np.nanpercentile(s, 75, 1)
    style, marker = _STYLES[i % len(_STYLES)]
    every = max(len(x) // 6, 1)   # staggered, so equal curves show each
    line, = ax.plot(x, med, linestyle=style, marker=marker,
                    markevery=(i % every, every), markersize=4,
                    label=f'{name} ({med[-1]:.2f})', zorder=3 + (i == 0))
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
    finals.append((name, med[-1], lo[-1], hi[-1], line.get_color(), marker))
    top = max(top, float(np.nanmax(hi)))
  if log_x:
    ax.set_xscale('log')
  ax.set_xlabel('episodes')
  normalised = scale != 1.0
  ax.set_ylabel('success / expert\'s' if normalised
                else 'success rate (median over seeds)')
  ax.set_ylim(-0.02, top + 0.02)
  ax.grid(alpha=0.3)
  if finals:
    ax.legend(fontsize=7, title='method (final)', title_fontsize=7)
  for j, (name, med, lo, hi, color, marker) in enumerate(finals):
    ax_end.errorbar([med], [j], xerr=[[med - lo], [hi - med]], fmt=marker,
                    color=color, capsize=3)
  ax_end.set_yticks(range(len(finals)), [f[0] for f in finals], fontsize=7)
  ax_end.set_xlim(-0.02, top + 0.02)
  ax_end.invert_yaxis()
  ax_end.set_xlabel('final success / expert\'s' if normalised
                    else 'final success')
  ax_end.grid(alpha=0.3, axis='x')
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return save_figure(fig, path)


def run_curve(config: Config, workdir: str,
              method: str | None = None) -> dict[str, np.ndarray]:
  """One method's curve from its metrics: `success.csv` (update, episodes,
  seed, success averaged over the chunk of `rl.log_every` updates) and
  `success.png` in its run folder; returns the curve."""
  cfg = rl_methods.method_config(config, method)
  out_dir = os.path.join(workdir, rl_methods.run_name(cfg))
  os.makedirs(out_dir, exist_ok=True)
  curve = rl_train.success_curve(_jsonl(cfg, workdir),
                                 [int(s) for s in cfg.rl.seeds])
  write_curve_csv(os.path.join(out_dir, 'success.csv'), curve,
                  cfg.rl.batch_size)
  plot_curves(os.path.join(out_dir, 'success.png'),
              {cfg.rl.method: (curve, cfg.rl.batch_size)})
  return curve


def _expert_success(config: Config, workdir: str) -> float | None:
  """The trained expert's success on this post-training task (the arena's
  `expert` phase), or None (the gridworld's expert needs no training; a
  zero rate normalises nothing)."""
  if 'expert' not in config:
    return None
  from irl.train import arena_expert  # noqa: PLC0415 (Brax: the arena only)
  rate = arena_expert.post_task_success(config, workdir)
  return rate if rate else None


def _jsonl(config: Config, workdir: str) -> str:
  return os.path.join(workdir, 'metrics',
                      f'{rl_methods.run_name(config)}.jsonl')


def run(config: Config, workdir: str,
        methods: list[str] | None = None, skip_missing: bool = True
        ) -> dict[str, Any]:
  """Trains (or resumes, or just reads) every method of `rl.fig8_methods`.

  A method whose inputs are missing (no metacontroller / CompILE run in the
  workdir) is skipped with a warning when `skip_missing`. Writes to
  `<workdir>/fig8/` (`fig8_task_<task>/` for another post-training task):
  `fig8.csv` (method, update, episodes, median, q25, q75 of success over
  seeds), `fig8_success.png`, `fig8_success_log.png`
  (log-scale episodes), for the arena `fig8_success_normalised.png` (by the
  expert's post-task success) and `summary.json` ({'final_success':
  {method: {median, q25, q75, episodes[, normalised_median]}},
  'expert_success_post', ...}, success of the last logged chunk).
  """
  methods = list(methods or config.rl.fig8_methods)
  curves, missing = {}, {}
  for method in methods:
    try:
      rl_train.train(config, workdir, method)
    except ckpt_lib.MissingInputError as e:
      if not skip_missing:
        raise
      logging.warning('fig8: skipping %s: %s', method, e)
      missing[method] = str(e)
      continue
    cfg = rl_methods.method_config(config, method)
    curves[method] = (run_curve(config, workdir, method), cfg.rl.batch_size)
  if not curves:
    raise ckpt_lib.MissingInputError(
        f'no method of Fig. 8 ({", ".join(missing)}) has its inputs in this '
        f'workdir; the first, {methods[0]}: {missing[methods[0]]}')
  out_dir = os.path.join(workdir, rl_methods.fig8_dir(config))
  os.makedirs(out_dir, exist_ok=True)

  def rows():
    for method, (curve, batch_size) in curves.items():
      s = curve['success']
      for i, u in enumerate(curve['update']):
        yield [method, int(u), int(u) * batch_size,
               f'{np.nanmedian(s[i]):.6g}',
               f'{np.nanpercentile(s[i], 25):.6g}',
               f'{np.nanpercentile(s[i], 75):.6g}']

  config_utils.write_csv(
      os.path.join(out_dir, 'fig8.csv'),
      ['method', 'update', 'episodes', 'median', 'q25', 'q75'], rows())
  title = f'post-training task {config.env.post_task}'
  plot_curves(os.path.join(out_dir, 'fig8_success.png'), curves, title=title)
  plot_curves(os.path.join(out_dir, 'fig8_success_log.png'), curves,
              log_x=True, title=title)
  final = {}
  for method, (curve, batch_size) in curves.items():
    last = curve['success'][-1] if len(curve['update']) else np.full(1, np.nan)
    final[method] = {
        'median': float(np.nanmedian(last)),
        'q25': float(np.nanpercentile(last, 25)),
        'q75': float(np.nanpercentile(last, 75)),
        'episodes': int(curve['update'][-1] * batch_size
                        if len(curve['update']) else 0)}
  # The arena's results are read against its expert (docs/method.md §3).
  expert = _expert_success(config, workdir)
  if expert:
    plot_curves(os.path.join(out_dir, 'fig8_success_normalised.png'),
                curves, title=f'{title}, normalised by the expert ({expert:.2f})',
                scale=expert)
    for f in final.values():
      f['normalised_median'] = f['median'] / expert
  summary = {'final_success': final, 'methods': list(curves),
             'skipped': [m for m in methods if m not in curves],
             'post_task': config.env.post_task}
  if expert:
    summary['expert_success_post'] = expert
  config_utils.write_json(os.path.join(out_dir, 'summary.json'), summary)
  return summary
