"""Fig. 3 / A1: linear subgoal probes of every kept pretraining checkpoint.

`run(config, workdir)` is the job behind experiments/probe.py: for each
checkpoint of `<workdir>/checkpoints/pretrain` (up to `pretrain.num_steps`)
it trains the L + 1 probes of `irl.analysis.probes` on the same episodes,
skips checkpoints whose result is on record with the same config, and writes
`<workdir>/probe/`: per-checkpoint JSON, `results.json`, the CSVs and the
figures (accuracy by layer and checkpoint; by step within a segment).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from absl import logging

from irl import config as config_lib
from irl.analysis.probes import train_probes
from irl.config import Config
from irl.train import pretrain
from irl.utils import config_utils
from irl.utils import metrics as metrics_lib

# Config fields that decide what a stored per-checkpoint result means.
RESULT_KEYS = ('seed', 'env', 'model', 'data.seq_len', 'probe')


def _result_fingerprint(config) -> dict:
  return config_utils.config_fingerprint(config, RESULT_KEYS,
                                       exclude=pretrain.TASK_FREE_FIELDS)


def run(config: Config, workdir: str) -> dict[str, Any]:
  """Probes every kept pretraining checkpoint of `workdir`; writes results.

  Writes under `<workdir>/probe/`: `step_<N>.json` per checkpoint (skipped
  on a rerun when present and computed with the same config), `results.json`,
  `accuracy_by_layer.csv`, `accuracy_by_segment_step.csv`,
  `fig3_probe_accuracy.png` and `probe_accuracy_by_segment_step.png`.
  """
  config = config_lib.build(config)
  pretrain.load_pretrained(config, workdir, 'the probes')
  ckpt = pretrain.checkpointer(config, workdir)
  # A run continued past pretrain.num_steps keeps later checkpoints: the
  # model asked for is the one at num_steps (require_pretrained loaded it).
  steps = [s for s in ckpt.all_steps() if s <= config.pretrain.num_steps]
  out_dir = os.path.join(workdir, 'probe')
  os.makedirs(out_dir, exist_ok=True)
  config_utils.save_config(config, out_dir)
  fingerprint = _result_fingerprint(config)
  writer = metrics_lib.MetricsWriter(workdir, 'probe')
  init_state = pretrain.make_pretrainer(config).init(jax.random.key(config.seed))
  # The same held-out and pool episodes for every checkpoint.
  key = jax.random.fold_in(jax.random.key(config.seed), 3_000)
  results = []
  for i, step in enumerate(steps):
    path = os.path.join(out_dir, f'step_{step:08d}.json')
    done = config_utils.load_if_done(path, fingerprint)
    if done is not None:
      logging.info('probe: checkpoint %d already done (%s)', step, path)
      results.append(done)
      continue
    logging.info('probe: checkpoint %d (%d/%d)', step, i + 1, len(steps))
    params = ckpt.restore_at(step, init_state).params
    run_writer = metrics_lib.MetricsWriter(workdir, f'probe_ckpt{step}',
                                           resume_step=0)
    result = train_probes(config, params, key,
                          progress_desc=f'probe ckpt {step}',
                          writer=run_writer)
    run_writer.close()
    result.update(checkpoint_step=step, fingerprint=fingerprint)
    config_utils.write_json(path, result, indent=1)
    writer.write_scalars(step, {
        'majority_accuracy': result['majority_accuracy'],
        **{f'accuracy_layer{l}': a
           for l, a in enumerate(result['accuracy'])}})
    results.append(result)
  ckpt.close()
  summary = summarize(results)
  config_utils.write_json(os.path.join(out_dir, 'results.json'),
                          {'checkpoints': results, 'summary': summary},
                          indent=1)
  write_csv(results, out_dir)
  if results:
    plot_accuracy_by_layer(
        os.path.join(out_dir, 'fig3_probe_accuracy.png'), results)
    plot_accuracy_by_segment_step(
        os.path.join(out_dir, 'probe_accuracy_by_segment_step.png'),
        results[-1])
  writer.write_summary(summary)
  writer.close()
  return summary


def summarize(results: list[dict]) -> dict[str, Any]:
  """Headline numbers of the last checkpoint: best layer, its accuracy."""
  if not results:
    return {}
  last = results[-1]
  acc = np.asarray(last['accuracy'])
  best = int(acc.argmax())
  return {
      'checkpoint_steps': [r['checkpoint_step'] for r in results],
      'final_checkpoint': last['checkpoint_step'],
      'accuracy_by_layer': acc.tolist(),
      'best_layer': best,
      'best_accuracy': float(acc[best]),
      'majority_accuracy': last['majority_accuracy'],
      'num_layers': len(acc) - 1,
  }


def write_csv(results: list[dict], out_dir: str) -> None:
  """Figure data: accuracy by (checkpoint, layer) and by segment step."""
  config_utils.write_csv(
      os.path.join(out_dir, 'accuracy_by_layer.csv'),
      ['checkpoint_step', 'layer', 'accuracy', 'nll', 'majority_accuracy'],
      ([r['checkpoint_step'], l, a, n, r['majority_accuracy']]
       for r in results
       for l, (a, n) in enumerate(zip(r['accuracy'], r['nll']))))
  config_utils.write_csv(
      os.path.join(out_dir, 'accuracy_by_segment_step.csv'),
      ['checkpoint_step', 'layer', 'segment_step', 'accuracy',
       'majority_accuracy', 'count'],
      ([r['checkpoint_step'], l, s, a, r['majority_by_segment_step'][s],
        r['count_by_segment_step'][s]]
       for r in results
       for l, row in enumerate(r['accuracy_by_segment_step'])
       for s, a in enumerate(row)))


# ----------------------------------------------------------------------------
# Figures (matplotlib Agg, imported lazily).


def plot_accuracy_by_layer(path: str, results: list[dict]) -> str:
  """Fig. 3 / A1: held-out probe accuracy vs layer, one line per checkpoint,
  the majority-class baseline dashed."""
  from irl.analysis.figures import plt, save_figure  # Agg; only to draw
  fig, ax = plt.subplots(figsize=(4.2, 3.2))
  cmap = plt.get_cmap('viridis')
  for i, r in enumerate(results):
    colour = cmap(i / max(len(results) - 1, 1))
    ax.plot(r['layers'], r['accuracy'], marker='o', ms=3, color=colour,
            label=f'{r["checkpoint_step"]:,} steps')
  ax.axhline(float(np.mean([r['majority_accuracy'] for r in results])),
             color='grey', ls='--', lw=1, label='majority class')
  ax.set_xlabel('layer l (residual index, 0 = embedding)')
  ax.set_ylabel('held-out probe accuracy')
  ax.set_xticks(results[-1]['layers'])
  ax.set_ylim(0, 1)
  ax.legend(fontsize=6, title='checkpoint', title_fontsize=7)
  ax.set_title('Linear subgoal probes', fontsize=9)
  fig.tight_layout()
  return save_figure(fig, path, dpi=150)


def plot_accuracy_by_segment_step(path: str, result: dict) -> str:
  """Probe accuracy vs steps since the subgoal segment began, per layer."""
  from irl.analysis.figures import plt, save_figure  # Agg; only to draw
  fig, ax = plt.subplots(figsize=(4.2, 3.2))
  cmap = plt.get_cmap('plasma')
  acc = np.asarray(result['accuracy_by_segment_step'])
  steps = np.arange(acc.shape[1])
  num = acc.shape[0]
  for l in range(num):
    ax.plot(steps, acc[l], color=cmap(l / max(num - 1, 1)), lw=1.2,
            label=f'l={l}')
  ax.plot(steps, result['majority_by_segment_step'], color='grey', ls='--',
          lw=1, label='majority class')
  ax.set_xlabel(f'step within subgoal segment (last bin: >= {steps[-1]})')
  ax.set_ylabel('held-out probe accuracy')
  ax.set_ylim(0, 1)
  ax.legend(fontsize=6, ncol=2)
  ax.set_title(f'Probe accuracy within a segment '
               f'(checkpoint {result["checkpoint_step"]:,})', fontsize=9)
  fig.tight_layout()
  return save_figure(fig, path, dpi=150)
