"""Figures drawn from what the training phases wrote to the workdir.

The trainers write arrays and metrics only (`segmentation.json` and the β
traces' arrays, metrics JSONL); the entry points and the pipeline call these
afterwards. Each returns the path written, or None where the phase wrote
nothing to draw (e.g. `trace_episodes = 0`).
"""

from __future__ import annotations

import json
import os

import ml_collections

from irl.analysis import figures
from irl.train import segmentation


def _traces(run_dir: str, threshold: float, title: str) -> str | None:
  arrays = segmentation.load_eval_arrays(run_dir)
  if arrays is None:
    return None
  return figures.beta_traces(
      os.path.join(run_dir, 'beta_traces.png'), arrays['beta'],
      arrays['valid'], arrays['subgoal_index'], arrays['subgoal'],
      num_episodes=len(arrays['beta']), threshold=threshold, title=title)


def _summary(run_dir: str) -> dict:
  with open(os.path.join(run_dir, 'segmentation.json')) as f:
    return json.load(f)


def metacontroller_traces(config: ml_collections.ConfigDict, workdir: str
                          ) -> str | None:
  """`<workdir>/<run_name>/beta_traces.png` (Fig. 6 / A3) of the
  metacontroller run `config` selects."""
  from irl.train import metacontroller as mct  # noqa: PLC0415
  m = config.metacontroller
  run_dir = os.path.join(workdir, mct.run_name(config))
  if not os.path.exists(os.path.join(run_dir, 'segmentation.json')):
    return None
  s = _summary(run_dir)
  return _traces(run_dir, m.switch_threshold,
                 f"{mct.run_name(config)}: α={m.kl_weight:g}, F1="
                 f"{s['f1']:.2f} on {s['num_episodes']} held-out episodes")


def compile_traces(config: ml_collections.ConfigDict, workdir: str
                   ) -> str | None:
  """`<workdir>/compile/beta_traces.png`: CompILE's causal β."""
  from irl.train import compile as compile_train  # noqa: PLC0415
  c = config.compile
  run_dir = os.path.join(workdir, compile_train.RUN_NAME)
  if not os.path.exists(os.path.join(run_dir, 'segmentation.json')):
    return None
  s = _summary(run_dir)
  return _traces(run_dir, c.switch_threshold,
                 f'CompILE causal β: α_z={c.z_kl_weight:g}, α_β='
                 f"{c.b_kl_weight:g}; F1 (segments)={s['f1']:.2f}, "
                 f"F1 (β)={s['causal_f1']:.2f}")
