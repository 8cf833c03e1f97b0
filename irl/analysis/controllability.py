"""Linear controllability of the residual stream (docs/method.md §5, Fig. 4).

`run(config, workdir)` is the job behind experiments/controllability.py: a
sweep over controlled layers l = 0..L and base-model depths (depth variants
are pretrained into `<workdir>/depth_<L>/`), resumable per (depth, layer),
writing JSON, CSV and the Fig. 4 heat map under `<workdir>/control/`. The
controllers are trained by `irl.analysis.controllers` and run in closed loop
by `irl.analysis.control_rollouts`.

Layer l = L is in the sweep: there the edit acts on the last residual, just
before the final norm and the output heads, so it re-maps the model's readout
per subgoal rather than steering computation that later blocks still do; it is
the reference point against which "mid-depth is best" is read. Layer 0 edits
the observation embedding.

Choice where the paper is silent: the depth sweep. The main model
(`model.num_layers`) is the finished run in the workdir; other depths are
pretrained (by `irl.pipeline.pretrain_depth_variants`, which
experiments/controllability.py calls) for `control.depth_pretrain_steps`
steps with otherwise the same config (shorter on the CPU preset, so depth and
training length are confounded there).
"""


from __future__ import annotations

import copy
import os
import pathlib
import time
from typing import Any

import flax.serialization
import jax
import numpy as np
from absl import logging

from irl import config as config_lib
from irl.analysis.control_rollouts import evaluate_controllers
from irl.analysis.controllers import make_control_trainer
from irl.analysis.controllers import train_controllers
from irl.config import Config
from irl.train import pretrain
from irl.utils import config_utils
from irl.utils import checkpoint as ckpt_lib
from irl.utils import metrics as metrics_lib
from irl.utils import parallel
from irl.utils import progress as progress_lib

# Config fields that decide what a stored per-layer result means.
RESULT_KEYS = ('seed', 'env', 'data.seq_len', 'control.rank',
               'control.decoder_hidden', 'control.num_steps',
               'control.batch_size', 'control.learning_rate',
               'control.weight_decay', 'control.lr_schedule',
               'control.lr_warmup_steps', 'control.lr_decay_steps',
               'control.num_episodes',
               'control.temperature', 'control.eval_batches',
               'control.pool_episodes')


# ----------------------------------------------------------------------------
# The job: layer sweep x depth sweep, resumable.


def depth_config(config: Config, depth: int) -> Config:
  """The config of the depth-`depth` variant of the base model."""
  config = config_lib.build(config)
  if depth == config.model.num_layers:
    return config
  changes = {'model.num_layers': depth}
  if config.control.depth_pretrain_steps:
    changes['pretrain.num_steps'] = config.control.depth_pretrain_steps
  # Only what pretraining and the controllers read: the metacontroller's or
  # CompILE's layer need not fit a shallower model they never run on.
  return config_lib.replace(config, changes, sections=(
      'data', 'model', 'pretrain', 'eval', 'control', 'probe'))


def depth_workdir(config: Config, workdir: str, depth: int) -> str:
  if depth == config.model.num_layers:
    return workdir
  return os.path.join(workdir, f'depth_{depth}')


def base_model_params(config: Config, workdir: str,
                      depth: int) -> tuple[Config, Any]:
  """(config, params) of the depth-`depth` base model: the main model in
  `workdir`, another depth in `<workdir>/depth_<depth>/`
  (`irl.pipeline.pretrain_depth_variants` trains those)."""
  cfg = depth_config(config, depth)
  wd = depth_workdir(config, workdir, depth)
  if wd == workdir:
    return cfg, pretrain.load_pretrained(config, workdir, 'controllability')
  try:
    return cfg, pretrain.load_params(cfg, wd)
  except FileNotFoundError:
    raise ckpt_lib.MissingInputError(
        f'control.depths lists {depth}, but {wd} holds no depth-{depth} base '
        f'model of {cfg.pretrain.num_steps} steps: experiments/'
        'controllability.py pretrains it first (irl.pipeline.'
        'pretrain_depth_variants).') from None


def _result_fingerprint(config, depth: int) -> dict:
  config = config_lib.build(config)
  fp = config_utils.config_fingerprint(config, RESULT_KEYS)
  cfg = depth_config(config, depth)
  fp['model'] = config_utils.to_jsonable(cfg.model)
  fp['pretrain_steps'] = int(cfg.pretrain.num_steps)
  return fp


def _training_fingerprint(fingerprint: dict) -> dict:
  """What the controllers' training depends on: everything but the
  post-training task, which only their evaluation reads."""
  fingerprint = copy.deepcopy(fingerprint)
  fingerprint.get('env', {}).pop('post_task', None)
  return fingerprint


def _trained_before(path: str, controllers_path: str,
                    fingerprint: dict) -> dict | None:
  """The training metrics of the controllers kept at `controllers_path` by a
  run that differed from `fingerprint` only in its post-training task, or
  None: such controllers are scored on the new task, not trained again."""
  if not (os.path.exists(path) and os.path.exists(controllers_path)):
    return None
  old = config_utils.read_json(path)
  if (_training_fingerprint(old.get('fingerprint', {}))
      != _training_fingerprint(fingerprint)):
    return None
  return {k: v for k, v in old.items()
          if k in ('train_nll', 'train_seconds') or k.startswith('heldout/')}


def layers_of(config: Config, depth: int) -> list[int]:
  """Controlled layers at `depth`: `control.layers` (those <= depth) or 0..L."""
  if config.control.layers:
    return sorted({int(l) for l in config.control.layers if l <= depth})
  return list(range(depth + 1))


def run(config: Config, workdir: str) -> dict[str, Any]:
  """The controllability sweep; writes `<workdir>/control/`.

  Per depth L: `depth_<L>/base.json` (the base model alone) and
  `depth_<L>/layer_<l>.json` (+ `controllers_layer_<l>.msgpack`); a rerun
  skips every file already computed with the same config. Then
  `results.json`, `success.csv`, `fig4_controllability.png` (heat map depth x
  layer) and `success_by_layer.png` (the main depth).
  """
  config = config_lib.build(config)
  cc = config.control
  # Fail before any work if the main model is missing.
  pretrain.load_pretrained(config, workdir, 'controllability')
  out_dir = os.path.join(workdir, 'control')
  os.makedirs(out_dir, exist_ok=True)
  config_utils.save_config(config, out_dir)
  writer = metrics_lib.MetricsWriter(workdir, 'control')
  depths = sorted({int(d) for d in cc.depths})
  rows = []
  base_rows = []
  for depth in depths:
    cfg, params = base_model_params(config, workdir, depth)
    d_dir = os.path.join(out_dir, f'depth_{depth}')
    os.makedirs(d_dir, exist_ok=True)
    fingerprint = _result_fingerprint(config, depth)
    eval_key = jax.random.fold_in(jax.random.key(config.seed), 5_000)

    layers = layers_of(config, depth)
    base_path = os.path.join(d_dir, 'base.json')
    base = config_utils.load_if_done(base_path, fingerprint)
    if base is None:
      base = evaluate_controllers(cfg, params, layers[0], None, eval_key)
      base.update(depth=depth, fingerprint=fingerprint)
      config_utils.write_json(base_path, base, indent=1)
    base_rows.append(base)
    logging.info('control: depth %d, base model alone: success %.3f',
                 depth, base['success'])

    with progress_lib.Progress(len(layers), desc=f'control depth {depth}',
                               log_every_secs=0.0) as bar:
      for i, layer in enumerate(layers):
        path = os.path.join(d_dir, f'layer_{layer}.json')
        done = config_utils.load_if_done(path, fingerprint)
        if done is None:
          t0 = time.time()
          controllers_path = os.path.join(
              d_dir, f'controllers_layer_{layer}.msgpack')
          train_metrics = _trained_before(path, controllers_path, fingerprint)
          if train_metrics is not None:
            logging.info('control: depth %d layer %d: the controllers trained '
                         'for another post-training task are scored on %s',
                         depth, layer, config.env.post_task)
            template = make_control_trainer(cfg, layer).init(
                jax.random.key(0)).params
            with open(controllers_path, 'rb') as f:
              dec_params = flax.serialization.from_bytes(template, f.read())
          else:
            # The stored result no longer describes the file trained next.
            if parallel.is_writer():
              pathlib.Path(path).unlink(missing_ok=True)
            name = f'control_depth{depth}_layer{layer}'
            run_writer = metrics_lib.MetricsWriter(workdir, name,
                                                   resume_step=0)
            key = jax.random.fold_in(jax.random.key(config.seed),
                                     4_000 + 100 * depth + layer)
            dec_params, train_metrics = train_controllers(
                cfg, params, layer, key, writer=run_writer,
                progress_desc=f'control depth {depth} layer {layer}')
            run_writer.close()
            config_utils.atomic_write_text(
                controllers_path, flax.serialization.to_bytes(dec_params))
          result = evaluate_controllers(cfg, params, layer, dec_params,
                                        eval_key)
          result.update(train_metrics)
          result.update(depth=depth, layer=layer, fingerprint=fingerprint,
                        base_success=base['success'],
                        seconds=time.time() - t0)
          config_utils.write_json(path, result, indent=1)
          writer.write_scalars(100 * depth + layer, {
              'depth': depth, 'layer': layer, 'success': result['success'],
              'mean_pairs_done': result['mean_pairs_done'],
              'heldout_action_nll': result['heldout/controlled_action_nll']})
          done = result
        rows.append(done)
        bar.update(i + 1, {'layer': layer, 'success': done['success']})
  summary = summarize(config, rows, base_rows)
  config_utils.write_json(
      os.path.join(out_dir, 'results.json'),
      {'layers': rows, 'base': base_rows, 'summary': summary}, indent=1)
  write_csv(rows, base_rows, out_dir)
  plot_heatmap(os.path.join(out_dir, 'fig4_controllability.png'), rows,
               base_rows)
  main_rows = [r for r in rows if r['depth'] == config.model.num_layers]
  main_base = [b for b in base_rows if b['depth'] == config.model.num_layers]
  if main_rows:
    plot_success_by_layer(os.path.join(out_dir, 'success_by_layer.png'),
                          main_rows, main_base[0]['success'])
  writer.write_summary(summary)
  writer.close()
  return summary


def summarize(config, rows: list[dict], base_rows: list[dict]) -> dict:
  """Success by (depth, layer), the base model's, and the L/2 headline."""
  out: dict[str, Any] = {'success': {}, 'base_success': {}}
  for b in base_rows:
    out['base_success'][str(b['depth'])] = b['success']
  for r in rows:
    out['success'].setdefault(str(r['depth']), {})[str(r['layer'])] = (
        r['success'])
  depth = config.model.num_layers
  mid = out['success'].get(str(depth), {}).get(str(depth // 2))
  if mid is not None:
    out['main_depth'] = depth
    out['mid_layer'] = depth // 2
    out['mid_layer_success'] = mid
  return out


def write_csv(rows: list[dict], base_rows: list[dict], out_dir: str) -> None:
  base = {b['depth']: b['success'] for b in base_rows}
  config_utils.write_csv(
      os.path.join(out_dir, 'success.csv'),
      ['depth', 'layer', 'success', 'mean_pairs_done',
       'heldout_controlled_action_nll', 'heldout_base_action_nll',
       'base_success'],
      ([r['depth'], r['layer'], r['success'], r['mean_pairs_done'],
        r['heldout/controlled_action_nll'], r['heldout/base_action_nll'],
        base[r['depth']]] for r in rows))


# ----------------------------------------------------------------------------
# Figures.


def plot_heatmap(path: str, rows: list[dict], base_rows: list[dict]) -> str:
  """Fig. 4: post-task success, base-model depth x controlled layer, with the
  base model alone ('none') in the first column."""
  from irl.analysis.figures import plt, save_figure  # Agg; only to draw
  depths = sorted({r['depth'] for r in rows} | {b['depth'] for b in base_rows})
  max_layer = max([r['layer'] for r in rows] + [0])
  grid = np.full((len(depths), max_layer + 2), np.nan)
  for b in base_rows:
    grid[depths.index(b['depth']), 0] = b['success']
  for r in rows:
    grid[depths.index(r['depth']), r['layer'] + 1] = r['success']
  fig, ax = plt.subplots(figsize=(1.2 + 0.55 * grid.shape[1],
                                  1.2 + 0.5 * len(depths)))
  cmap = plt.get_cmap('viridis').with_extremes(bad='#dddddd')
  im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1,
                 aspect='auto', origin='lower')
  for (i, j), v in np.ndenumerate(grid):
    if not np.isnan(v):
      ax.text(j, i, f'{v:.2f}', ha='center', va='center', fontsize=6,
              color='white' if v < 0.6 else 'black')
  ax.set_xticks(range(grid.shape[1]))
  ax.set_xticklabels(['none'] + [str(l) for l in range(max_layer + 1)])
  ax.set_yticks(range(len(depths)))
  ax.set_yticklabels([str(d) for d in depths])
  ax.set_xlabel('controlled layer l')
  ax.set_ylabel('base-model depth L')
  ax.set_title('Post-task success with ground-truth controllers', fontsize=8)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  fig.tight_layout()
  return save_figure(fig, path, dpi=150)


def plot_success_by_layer(path: str, rows: list[dict],
                          base_success: float) -> str:
  from irl.analysis.figures import plt, save_figure  # Agg; only to draw
  rows = sorted(rows, key=lambda r: r['layer'])
  fig, ax = plt.subplots(figsize=(4.0, 3.0))
  ax.plot([r['layer'] for r in rows], [r['success'] for r in rows],
          marker='o', label='ground-truth controllers')
  ax.axhline(base_success, color='grey', ls='--', lw=1,
             label='base model alone')
  ax.set_xlabel('controlled layer l')
  ax.set_ylabel('post-task success')
  ax.set_ylim(0, 1)
  ax.set_xticks([r['layer'] for r in rows])
  ax.legend(fontsize=7)
  ax.set_title(f'Depth {rows[0]["depth"]}: success by controlled layer',
               fontsize=9)
  fig.tight_layout()
  return save_figure(fig, path, dpi=150)
