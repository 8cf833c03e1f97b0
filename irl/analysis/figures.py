"""Figures shared by the experiments (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from irl.train.segmentation import (  # noqa: E402
    SWITCH_THRESHOLD, boundary_scores, switches, true_boundaries)
from irl.envs import registry  # noqa: E402
from irl.utils import parallel  # noqa: E402


def episode_strip(path: str, obs: np.ndarray, env: registry.Environment,
                  params: Any, titles: Sequence[str], suptitle: str = '',
                  max_frames: int = 16) -> str:
  """Writes a PNG strip of the frames `obs` [S, obs_dim] (evenly subsampled),
  drawn by the environment's renderer."""
  idx = np.unique(np.linspace(0, len(obs) - 1, min(max_frames, len(obs)))
                  .round().astype(int))
  cols = min(len(idx), 8)
  rows = int(np.ceil(len(idx) / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows),
                           squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for ax, i in zip(axes.flat, idx):
    image, labels = env.render_observation(obs[i], params)
    ax.imshow(image)
    for x, y, text in labels:
      ax.text(x, y, text, ha='center', va='center', fontsize=5,
              color='black')
    ax.set_title(titles[i], fontsize=7)
  if suptitle:
    fig.suptitle(suptitle, fontsize=9)
  fig.tight_layout()
  return save_figure(fig, path)


def save_figure(fig, path: str, dpi: int = 120) -> str:
  """Writes `fig` to the PNG `path` (folders made) and closes it; on the
  writing process only (`parallel.is_writer`)."""
  if parallel.is_writer():
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path


def beta_traces(path: str, beta, valid, subgoal_index, subgoal=None,
                num_episodes: int = 6, threshold: float = SWITCH_THRESHOLD,
                title: str = '') -> str:
  """Writes a PNG like the paper's Fig. 6 / A3: β_t of several episodes.

  Each row is one episode: β_t over its valid steps, dotted vertical lines at
  the true subgoal boundaries, the background shaded by the subgoal pursued
  (`subgoal` [B, T] ids, if given: the gridworld's pairs, the arena's
  colours), switches (β > threshold, t ≥ 1) marked.
  """
  beta = np.asarray(beta, np.float32)
  valid = np.asarray(valid, bool)
  bounds = np.asarray(true_boundaries(subgoal_index, valid))
  sw = np.asarray(switches(beta, valid, threshold))
  n = min(num_episodes, beta.shape[0])
  fig, axes = plt.subplots(n, 1, figsize=(8, 1.3 * n + 0.6), squeeze=False,
                           sharex=True)
  cmap = plt.get_cmap('Pastel1')
  for i, ax in enumerate(axes[:, 0]):
    length = max(int(valid[i].sum()), 1)
    t = np.arange(length)
    if subgoal is not None:
      goal = np.asarray(subgoal)[i]
      for s in range(length):
        if goal[s] >= 0:
          ax.axvspan(s - 0.5, s + 0.5, color=cmap(int(goal[s]) % 9),
                     alpha=0.6, lw=0)
    ax.step(t, beta[i, :length], where='mid', color='k', lw=1.2)
    ax.plot(t[sw[i, :length]], beta[i, :length][sw[i, :length]], 'o',
            color='tab:red', ms=3.5)
    for b in np.nonzero(bounds[i])[0]:
      ax.axvline(b - 0.5, color='tab:blue', ls=':', lw=1.5)
    ax.axhline(threshold, color='grey', lw=0.6, ls='--')
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.5, beta.shape[1] - 0.5)
    row = boundary_scores(sw[i:i + 1], bounds[i:i + 1])
    ax.set_ylabel(f'β  (ep {i})', fontsize=7)
    ax.text(1.0, 1.02, f"{int(sw[i].sum())} switches, {int(bounds[i].sum())} "
            f"boundaries, F1 {row['f1']:.2f}", transform=ax.transAxes,
            ha='right', va='bottom', fontsize=6)
    ax.tick_params(labelsize=6)
  axes[-1, 0].set_xlabel('step t  (dotted: true subgoal boundary; red: β > '
                         f'{threshold:g}; shading: subgoal pursued)', fontsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return save_figure(fig, path)


def rate_distortion_figure(path: str, records: Sequence[Mapping[str, Any]],
                           f1_threshold: float = 0.8) -> str:
  """Writes a PNG like the paper's Fig. 7: action NLL against KL per run.

  Each record needs 'kl', 'action_nll', 'kl_weight', 'base_model', 'f1'.
  Marker shape: base-model mode; colour: α; filled: subgoal-aligned
  switching (F1 ≥ f1_threshold); hollow otherwise. The KL axis is
  logarithmic above 0.01 nats per step (symlog).
  """
  fig, ax = plt.subplots(figsize=(7.0, 4.2))
  alphas = sorted({float(r['kl_weight']) for r in records})
  cmap = plt.get_cmap('viridis')
  colour = {a: cmap(i / max(len(alphas) - 1, 1)) for i, a in enumerate(alphas)}
  markers = {'frozen': 'o', 'cotrain': 's', 'cotrain_scratch': '^'}
  labels = {'frozen': 'θ frozen', 'cotrain': 'θ co-trained (from pretrained)',
            'cotrain_scratch': 'θ co-trained (from scratch)'}
  for r in records:
    c = colour[float(r['kl_weight'])]
    aligned = r['f1'] >= f1_threshold
    ax.scatter(r['kl'], r['action_nll'], marker=markers.get(r['base_model'],
                                                            'x'),
               s=42, facecolors=c if aligned else 'none', edgecolors=c,
               linewidths=1.3)
  for mode in sorted({r['base_model'] for r in records}):
    ax.scatter([], [], marker=markers.get(mode, 'x'), facecolors='none',
               edgecolors='k', label=labels.get(mode, mode))
  ax.scatter([], [], marker='o', color='grey',
             label=f'filled: switches aligned (F1 ≥ {f1_threshold:g})')
  for a in alphas:
    ax.plot([], [], color=colour[a], lw=4, label=f'α = {a:g}')
  # α = 0 spends tens of nats per step, α = 1 almost none: on a linear
  # axis all the other runs crowd against the KL = 0 line.
  ax.set_xscale('symlog', linthresh=1e-2)
  ax.set_xlabel('KL(q(z_t) ‖ N(0, I))  [nats / step, linear below 0.01]')
  ax.set_ylabel('action NLL  [nats / step]')
  ax.set_title('Rate-distortion of the metacontroller', fontsize=9)
  # Outside the axes: every corner of them can hold a run.
  ax.legend(fontsize=6, loc='upper left', bbox_to_anchor=(1.02, 1.0))
  fig.tight_layout()
  return save_figure(fig, path)
