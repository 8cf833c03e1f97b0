"""Top-down trajectories over the arena (docs/method.md §2.2): the expert's
episodes and the base model's closed loop, drawn from their observations.

Each panel is the episode's layout (the arena's renderer on its first
observation) with the body's path (the observation's x, y) on top: a
circle at the start, a cross at the end, the task and the colours visited
in the title.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np

from irl import config as config_lib
from irl.analysis.figures import plt, save_figure
from irl.config import Config
from irl.data import stream
from irl.envs import arena_pinpad
from irl.envs import registry
from irl.train import evaluate
from irl.utils import parallel

CELL_PX = 24


def plot_trajectories(path: str, obs: np.ndarray, live: np.ndarray,
                      params: arena_pinpad.ArenaParams,
                      titles: Sequence[str], suptitle: str = '') -> str:
  """obs [E, T, obs_dim], live [E, T] bool -> a PNG of E panels."""
  cols = min(len(obs), 4)
  rows = -(-len(obs) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows),
                           squeeze=False)
  xy_slice = arena_pinpad.observation_layout(params)['xy']
  h, s = params.half_width, params.cell_size
  for ax in axes.flat:
    ax.axis('off')
  for ax, o, keep, title in zip(axes.flat, obs, live, titles):
    image, labels = arena_pinpad.render_observation(o[0], params, CELL_PX)
    ax.imshow(image)
    for x, y, text in labels:
      ax.text(x, y, text, ha='center', va='center', fontsize=6)
    xy = o[keep][:, xy_slice] * h
    px = (xy[:, 0] + h) / s * CELL_PX
    py = (h - xy[:, 1]) / s * CELL_PX
    ax.plot(px, py, '-', color='black', linewidth=1)
    ax.plot(px[:1], py[:1], 'o', color='black', markersize=4)
    ax.plot(px[-1:], py[-1:], 'x', color='black', markersize=5)
    ax.set_title(title, fontsize=7)
  if suptitle:
    fig.suptitle(suptitle, fontsize=8)
  fig.tight_layout()
  return save_figure(fig, path)


def _titles(params: arena_pinpad.ArenaParams, task_id: np.ndarray,
            visits: np.ndarray, success: np.ndarray) -> list[str]:
  """'task 0-3-2: 0-3 ✗' per episode: its task and the colours visited."""
  seq = lambda v: '-'.join(str(c) for c in v if c >= 0) or 'none'
  return [f'task {seq(params.tasks[t])}: {seq(v)} {"✓" if ok else "✗"}'
          for t, v, ok in zip(task_id, visits, success)]


def expert_figure(config: Config, workdir: str, num_episodes: int = 8,
                  seed: int = 0) -> str:
  """`<workdir>/expert/trajectories.png`: D* episodes of the trained expert."""
  params = config_lib.env_params(config)
  roll = parallel.to_host(stream.stream_from_config(
      config, 'expert', batch_size=num_episodes)(jax.random.key(seed)))
  titles = _titles(params, roll.task_id, roll.visits, roll.success)
  return plot_trajectories(
      os.path.join(workdir, 'expert', 'trajectories.png'), roll.obs,
      roll.valid, params, titles, 'the expert (mean action), pretraining tasks')


def base_model_figure(config: Config, workdir: str, model: Any,
                      base_params: Any, num_episodes: int = 8,
                      seed: int = 0) -> str:
  """`<workdir>/eval/trajectories.png`: the base model alone in closed loop
  on the pretraining tasks (which it cannot see; at eval.temperature)."""
  params = config_lib.env_params(config)
  env = registry.from_config(config)
  roll = evaluate.closed_loop(model, base_params, env, params,
                              jax.random.key(seed), num_episodes,
                              config.eval.temperature, trajectories=True)
  titles = _titles(params, roll['task_id'], roll['visits'], roll['success'])
  return plot_trajectories(
      os.path.join(workdir, 'eval', 'trajectories.png'), roll['obs'],
      roll['live'], params, titles,
      f'the base model alone (T = {config.eval.temperature:g})')
