"""Drawing gridworld-pinpad states and observations (host side, for figures).

`render` draws an environment state; `render_observation` draws what one
observation shows, with the colour ids as labels (the registry's
`render_observation`, used by the expert-demo figure).
"""

from __future__ import annotations

import types

import numpy as np

from irl.envs.gridworld_pinpad import EMPTY, EnvParams, EnvState

PALETTE = np.array([
    [230, 25, 75], [245, 130, 48], [255, 225, 25], [60, 180, 75],
    [70, 240, 240], [0, 130, 200], [145, 30, 180], [240, 50, 230],
    [170, 110, 40], [128, 128, 0], [0, 0, 128], [250, 190, 212],
], np.uint8)
WALL_RGB = np.array([64, 64, 64], np.uint8)
FLOOR_RGB = np.array([245, 245, 245], np.uint8)
AGENT_RGB = np.array([0, 0, 0], np.uint8)


def render(state: EnvState, params: EnvParams, cell_px: int = 12
           ) -> np.ndarray:
  """[G·cell_px, G·cell_px, 3] uint8 image of one (unbatched) state."""
  g = params.grid_size
  grid = np.asarray(state.grid).reshape(g, g)
  img = np.empty((g, g, 3), np.uint8)
  img[:] = FLOOR_RGB
  for c in range(params.num_colours):
    img[grid == c] = PALETTE[c % len(PALETTE)]
  img[grid >= params.num_colours] = WALL_RGB
  img = np.repeat(np.repeat(img, cell_px, 0), cell_px, 1)
  img[::cell_px, :] = 200  # grid lines
  img[:, ::cell_px] = 200
  r, c = divmod(int(state.agent), g)
  m = max(cell_px // 4, 1)
  img[r * cell_px + m:(r + 1) * cell_px - m,
      c * cell_px + m:(c + 1) * cell_px - m] = AGENT_RGB
  return img


def decode_observation(obs: np.ndarray, params: EnvParams
                       ) -> tuple[np.ndarray, int]:
  """One observation [obs_dim] -> (grid [N] as in EnvState, agent cell)."""
  cells = np.asarray(obs).reshape(params.num_cells, params.num_channels)
  objects = cells[:, :-1]
  grid = np.where(objects.any(-1), objects.argmax(-1), EMPTY)
  return grid.astype(np.int32), int(cells[:, -1].argmax())


def render_observation(obs: np.ndarray, params: EnvParams, cell_px: int = 12
                       ) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
  """What one observation [obs_dim] shows: (RGB image [H, W, 3] uint8, text
  labels (x, y, colour id) at the colour cells, in image pixels)."""
  grid, agent = decode_observation(obs, params)
  img = render(types.SimpleNamespace(grid=grid, agent=agent), params,
               cell_px)
  labels = []
  for cell in np.nonzero((grid >= 0) & (grid < params.num_colours))[0]:
    r, c = divmod(int(cell), params.grid_size)
    labels.append(((c + 0.5) * cell_px, (r + 0.5) * cell_px,
                   str(grid[cell])))
  return img, labels
