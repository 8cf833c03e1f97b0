"""Does the switching gate β segment behaviour at subgoal boundaries? (docs/method.md §6)

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
host. The module also reads and writes the β traces a run keeps. Pure
metrics: no training stack, no figures (β is drawn by
irl/analysis/figures.py); what the two segmenting runs share to train is in
irl/train/segmenting.py.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irl.utils import parallel

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


# --------------------------------------------------------------------------
# What a segmenting run writes of its held-out evaluation, and reads back.

EVAL_ARRAYS = 'beta_traces.npz'
SUMMARY = 'segmentation.json'


def step_means(arrays: dict, names: Sequence[str]) -> dict[str, float]:
  """The mean over valid steps of each per-step array [.., E, T] in `names`."""
  valid = arrays['valid']
  return {n: float((arrays[n] * valid).sum() / max(valid.sum(), 1))
          for n in names}


def nll_at_ties(arrays: dict) -> dict[str, float]:
  """Held-out action NLL under the posterior-mean code, split by how many
  moves were optimal for the expert (`optimal_moves` [.., E, T]).

  The expert draws uniformly among its k optimal moves, so at a tie (k ≥ 2)
  no predictor that cannot see the future beats ln k: a code that does carries
  the expert's own draw, read from the future through s, not the subgoal. At
  k = 1 the floor is 0, and what a code buys there is precision.
  """
  valid = arrays['valid'].astype(bool)
  k = arrays['optimal_moves']
  tied, untied = valid & (k >= 2), valid & (k == 1)
  def mean(x, sel):
    # NaN, not 0, where no step qualifies: 0 would read as a perfect fit.
    return float((x * sel).sum() / sel.sum()) if sel.any() else float('nan')
  return {
      'tied_fraction': mean(tied, valid),
      'ceiling_nll_tied': mean(np.log(np.maximum(k, 1)), tied),
      'action_nll_tied': mean(arrays['action_nll_posterior_mean'], tied),
      'action_nll_untied': mean(arrays['action_nll_posterior_mean'], untied),
      'action_nll_no_control_tied': mean(arrays['action_nll_no_control'],
                                         tied),
      'action_nll_no_control_untied': mean(arrays['action_nll_no_control'],
                                           untied),
  }


# What the segmentation figures read: the first episodes' β and subgoals.
_TRACE_FIELDS = ('beta', 'valid', 'subgoal_index', 'subgoal')


def save_eval_arrays(out_dir: str, arrays: dict, num_episodes: int) -> str:
  """Writes the first `num_episodes` held-out episodes' β [E, T], valid,
  subgoal_index and subgoal to `<out_dir>/EVAL_ARRAYS`. With 0 episodes it
  writes none and removes an earlier run's, so no figure draws stale β."""
  path = os.path.join(out_dir, EVAL_ARRAYS)
  if not parallel.is_writer():
    return path
  if num_episodes:
    np.savez_compressed(path + '.tmp.npz', **{
        k: np.asarray(arrays[k])[:num_episodes] for k in _TRACE_FIELDS})
    os.replace(path + '.tmp.npz', path)
  else:
    pathlib.Path(path).unlink(missing_ok=True)
  return path


def load_eval_arrays(out_dir: str) -> dict[str, np.ndarray] | None:
  """What `save_eval_arrays` wrote to `out_dir`, or None."""
  path = os.path.join(out_dir, EVAL_ARRAYS)
  if not os.path.exists(path):
    return None
  with np.load(path) as f:
    return {k: f[k] for k in f.files}
