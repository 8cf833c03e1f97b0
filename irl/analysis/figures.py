"""Figures shared by the experiments (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

import os
import types
from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from irl.envs import gridworld_pinpad as gw  # noqa: E402


def decode_observation(obs: np.ndarray, params: gw.EnvParams
                       ) -> tuple[np.ndarray, int]:
  """One gridworld observation [obs_dim] -> (grid [N] as in EnvState, agent)."""
  cells = np.asarray(obs).reshape(params.num_cells, params.num_channels)
  objects = cells[:, :-1]
  grid = np.where(objects.any(-1), objects.argmax(-1), gw.EMPTY)
  return grid.astype(np.int32), int(cells[:, -1].argmax())


def render_observation(obs: np.ndarray, params: gw.EnvParams,
                       cell_px: int = 12) -> np.ndarray:
  grid, agent = decode_observation(obs, params)
  return gw.render(types.SimpleNamespace(grid=grid, agent=agent), params,
                   cell_px)


def episode_strip(path: str, obs: np.ndarray, params: gw.EnvParams,
                  titles: Sequence[str], suptitle: str = '',
                  max_frames: int = 16) -> str:
  """Writes a PNG strip of the frames `obs` [S, obs_dim] (evenly subsampled)."""
  idx = np.unique(np.linspace(0, len(obs) - 1, min(max_frames, len(obs)))
                  .round().astype(int))
  cols = min(len(idx), 8)
  rows = int(np.ceil(len(idx) / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows),
                           squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for ax, i in zip(axes.flat, idx):
    cell_px = 12
    ax.imshow(render_observation(obs[i], params, cell_px))
    grid, _ = decode_observation(obs[i], params)
    for cell in np.nonzero((grid >= 0) & (grid < params.num_colours))[0]:
      r, c = divmod(int(cell), params.grid_size)
      ax.text((c + 0.5) * cell_px, (r + 0.5) * cell_px, str(grid[cell]),
              ha='center', va='center', fontsize=5, color='black')
    ax.set_title(titles[i], fontsize=7)
  if suptitle:
    fig.suptitle(suptitle, fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
