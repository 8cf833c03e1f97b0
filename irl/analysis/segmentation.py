"""Does the switching gate β segment behaviour at subgoal boundaries? (PAPER.md §6)

Definitions (the paper counts switches at β > 0.5 and is silent on the rest):
- A true boundary is a valid step t ≥ 1 whose subgoal index (the position of
  the pair being pursued in the task) differs from that of step t − 1: the
  first step towards a new pair of colours. t = 0 is never a boundary.
- A switch is a valid step t ≥ 1 with β_t > threshold. t = 0 is not scored:
  the metacontroller always takes a fresh code there (β_0 := 1 by
  construction, see irl/models/metacontroller.py), so it would be a free hit.
- Matching: one-to-one, a switch matches an unmatched true boundary at most
  `tolerance` steps away (±1 by default); greedy left-to-right matching, which
  is optimal for equal-width windows on a line. Unmatched switches are false
  positives, unmatched boundaries false negatives, summed over episodes
  (micro average). 0/0 counts as 1 for precision (no false alarms), recall
  (nothing to find) and F1 = 2TP / (2TP + FP + FN).
- Counts: switches and true boundaries per episode (t ≥ 1), their medians and
  the median of the per-episode difference.

Both mask functions work on numpy arrays (on the host) and on jax arrays (the
trainer logs switch counts inside its jitted step); the scoring runs on the
host.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SWITCH_THRESHOLD = 0.5
TOLERANCE = 1


def _xp(*arrays):
  # numpy stays numpy (no device round trip, no per-op compilation).
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def true_boundaries(subgoal_index, valid):
  """[B, T] bool: valid steps t ≥ 1 that start a new subgoal (pair)."""
  xp = _xp(subgoal_index, valid)
  subgoal_index = xp.asarray(subgoal_index)
  valid = xp.asarray(valid).astype(bool)
  change = subgoal_index[:, 1:] != subgoal_index[:, :-1]
  change = xp.concatenate([xp.zeros_like(change[:, :1]), change], axis=1)
  return change & valid


def switches(beta, valid, threshold: float = SWITCH_THRESHOLD):
  """[B, T] bool: valid steps t ≥ 1 with β_t > threshold."""
  xp = _xp(beta, valid)
  beta = xp.asarray(beta)
  valid = xp.asarray(valid).astype(bool)
  not_first = xp.arange(beta.shape[1])[None, :] >= 1
  return (beta > threshold) & valid & not_first


def match_events(predicted: Sequence[int], true: Sequence[int],
                 tolerance: int = TOLERANCE) -> int:
  """Number of one-to-one matches |p − t| ≤ tolerance between sorted times."""
  predicted, true = sorted(predicted), sorted(true)
  i = j = matched = 0
  while i < len(predicted) and j < len(true):
    if abs(predicted[i] - true[j]) <= tolerance:
      matched += 1
      i += 1
      j += 1
    elif predicted[i] < true[j]:
      i += 1
    else:
      j += 1
  return matched


def _ratio(num: float, den: float) -> float:
  return 1.0 if den == 0 else float(num) / float(den)


def boundary_scores(switch_mask, boundary_mask,
                    tolerance: int = TOLERANCE) -> dict[str, float]:
  """Precision, recall, F1 of switches against true boundaries, and counts.

  Args:
    switch_mask: [B, T] bool detected switches (see `switches`).
    boundary_mask: [B, T] bool true boundaries (see `true_boundaries`).
    tolerance: a switch at most this many steps from a boundary matches it.
  """
  switch_mask = np.asarray(switch_mask, bool)
  boundary_mask = np.asarray(boundary_mask, bool)
  if switch_mask.shape != boundary_mask.shape or switch_mask.ndim != 2:
    raise ValueError(f'masks must both be [B, T], got {switch_mask.shape} '
                     f'and {boundary_mask.shape}')
  tp = 0
  for pred, true in zip(switch_mask, boundary_mask):
    tp += match_events(np.nonzero(pred)[0], np.nonzero(true)[0], tolerance)
  num_switches = switch_mask.sum(1)
  num_boundaries = boundary_mask.sum(1)
  fp = int(num_switches.sum()) - tp
  fn = int(num_boundaries.sum()) - tp
  return {
      'precision': _ratio(tp, tp + fp),
      'recall': _ratio(tp, tp + fn),
      'f1': _ratio(2 * tp, 2 * tp + fp + fn),
      'true_positives': tp,
      'false_positives': fp,
      'false_negatives': fn,
      'num_episodes': int(switch_mask.shape[0]),
      'median_switches_per_episode': float(np.median(num_switches)),
      'mean_switches_per_episode': float(num_switches.mean()),
      'median_boundaries_per_episode': float(np.median(num_boundaries)),
      'mean_boundaries_per_episode': float(num_boundaries.mean()),
      'median_count_error': float(np.median(num_switches - num_boundaries)),
      'count_exact_fraction': float(np.mean(num_switches == num_boundaries)),
  }


def segmentation_report(beta, valid, subgoal_index,
                        threshold: float = SWITCH_THRESHOLD,
                        tolerance: int = TOLERANCE) -> dict[str, float]:
  """`boundary_scores` of β [B, T] against the pairs of `subgoal_index`,
  plus how binary β is (fraction of valid t ≥ 1 with β < 0.1 or β > 0.9)."""
  beta = np.asarray(beta, np.float32)
  valid = np.asarray(valid, bool)
  report = boundary_scores(switches(beta, valid, threshold),
                           true_boundaries(subgoal_index, valid), tolerance)
  scored = valid.copy()
  scored[:, 0] = False
  b = beta[scored]
  report['beta_mean'] = float(b.mean()) if b.size else float('nan')
  report['beta_binary_fraction'] = (float(np.mean((b < 0.1) | (b > 0.9)))
                                    if b.size else float('nan'))
  report['switch_threshold'] = float(threshold)
  report['tolerance'] = int(tolerance)
  return report


def code_subgoal_accuracy(codes, subgoal, subgoal_index, valid
                          ) -> dict[str, float]:
  """Do the codes name the subgoals? Nearest-centroid decoding of the pair.

  For every segment (the valid steps of one subgoal index) the code in use
  at its middle step is one sample, labelled with the segment's
  ground-truth subgoal. Centroids per subgoal are fitted on the first half of
  the episodes and scored on the second half, so the accuracy measures
  held-out information about the subgoal, against the majority-class rate.
  Switching can align with the boundaries while the codes it switches
  between carry no subgoal at all; this tells the two apart.

  Args:
    codes: [B, T, n_z] the code in use (posterior mean).
    subgoal: [B, T] int ground-truth subgoal (pair id); subgoal_index [B, T]
      its position in the task; valid [B, T] bool.
  Returns:
    {'code_subgoal_acc', 'code_subgoal_chance', 'code_subgoal_samples'}.
  """
  codes = np.asarray(codes, np.float32)
  subgoal, index = np.asarray(subgoal), np.asarray(subgoal_index)
  valid = np.asarray(valid, bool)
  x, y, first_half = [], [], []
  half = codes.shape[0] // 2
  for b in range(codes.shape[0]):
    for k in np.unique(index[b][valid[b]]):
      steps = np.nonzero(valid[b] & (index[b] == k))[0]
      t = steps[len(steps) // 2]
      if subgoal[b, t] < 0:
        continue
      x.append(codes[b, t])
      y.append(int(subgoal[b, t]))
      first_half.append(b < half)
  x, y, first_half = np.asarray(x), np.asarray(y), np.asarray(first_half, bool)
  train, test = first_half, ~first_half
  labels = np.unique(y[train]) if train.any() else np.zeros(0, int)
  if not test.any() or labels.size == 0:
    return {'code_subgoal_acc': float('nan'),
            'code_subgoal_chance': float('nan'),
            'code_subgoal_samples': int(len(y))}
  centroids = np.stack([x[train & (y == c)].mean(0) for c in labels])
  dist = ((x[test][:, None] - centroids[None]) ** 2).sum(-1)
  pred = labels[dist.argmin(1)]
  majority = np.bincount(y[train]).argmax()
  return {'code_subgoal_acc': float(np.mean(pred == y[test])),
          'code_subgoal_chance': float(np.mean(y[test] == majority)),
          'code_subgoal_samples': int(len(y))}


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def beta_traces(path: str, beta, valid, subgoal_index, subgoal=None,
                num_episodes: int = 6, threshold: float = SWITCH_THRESHOLD,
                title: str = '') -> str:
  """Writes a PNG like the paper's Fig. 6 / A3: β_t of several episodes.

  Each row is one episode: β_t over its valid steps, dotted vertical lines at
  the true pair boundaries, the background shaded by the pair pursued
  (`subgoal` [B, T] pair ids, if given), switches (β > threshold, t ≥ 1)
  marked.
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
  axes[-1, 0].set_xlabel('step t  (dotted: true pair boundary; red: β > '
                         f'{threshold:g}; shading: pair pursued)', fontsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return _save(fig, path)


def rate_distortion_figure(path: str, records: Sequence[Mapping[str, Any]],
                           f1_threshold: float = 0.8) -> str:
  """Writes a PNG like the paper's Fig. 7: action NLL against KL per run.

  Each record needs 'kl', 'action_nll', 'kl_weight', 'base_model', 'f1'.
  Marker shape: base-model mode; colour: α; filled: subgoal-aligned
  switching (F1 ≥ f1_threshold); hollow otherwise.
  """
  fig, ax = plt.subplots(figsize=(5.5, 4.2))
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
  ax.set_xlabel('KL(q(z_t) ‖ N(0, I))  [nats / step]')
  ax.set_ylabel('action NLL  [nats / step]')
  ax.set_title('Rate-distortion of the metacontroller', fontsize=9)
  ax.legend(fontsize=6, loc='upper right')
  fig.tight_layout()
  return _save(fig, path)
