"""Figures drawn from what the training phases wrote to the workdir.

The trainers write arrays and metrics only (`segmentation.json` and the β
traces' arrays, metrics JSONL); the entry points and the pipeline call these
afterwards. Each returns the path written, or None where the phase wrote
nothing to draw (e.g. `trace_episodes = 0`).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Callable


from irl.analysis import figures
from irl.config import Config
from irl.train import compile as compile_train
from irl.train import metacontroller as mct
from irl.train import segmentation


def _traces(run_dir: str, threshold: float,
            title: Callable[[dict], str]) -> str | None:
  """`<run_dir>/beta_traces.png` from the arrays and scores the trainer
  wrote there; `title(scores)` names the run."""
  scores_path = os.path.join(run_dir, segmentation.SUMMARY)
  figure = os.path.join(run_dir, 'beta_traces.png')
  arrays = segmentation.load_eval_arrays(run_dir)
  if arrays is None or not os.path.exists(scores_path):
    # A run that kept no traces leaves no earlier run's figure to report.
    pathlib.Path(figure).unlink(missing_ok=True)
    return None
  with open(scores_path) as f:
    scores = json.load(f)
  return figures.beta_traces(
      figure, arrays['beta'],
      arrays['valid'], arrays['subgoal_index'], arrays['subgoal'],
      num_episodes=len(arrays['beta']), threshold=threshold,
      title=title(scores))


def metacontroller_traces(config: Config, workdir: str) -> str | None:
  """`<workdir>/<run_name>/beta_traces.png` (Fig. 6 / A3) of the
  metacontroller run `config` selects."""
  m = config.metacontroller
  name = mct.run_name(config)
  return _traces(os.path.join(workdir, name), m.switch_threshold,
                 lambda s: f"{name}: α={m.kl_weight:g}, F1={s['f1']:.2f} on "
                 f"{s['num_episodes']} held-out episodes")


def compile_traces(config: Config, workdir: str) -> str | None:
  """`<workdir>/compile/beta_traces.png`: CompILE's causal β."""
  c = config.compile
  return _traces(os.path.join(workdir, compile_train.RUN_NAME),
                 c.switch_threshold,
                 lambda s: f'CompILE causal β: α_z={c.z_kl_weight:g}, α_β='
                 f"{c.b_kl_weight:g}; F1 (segments)={s['f1']:.2f}, "
                 f"F1 (β)={s['causal_f1']:.2f}")
