"""Ant-pinpad (docs/method.md §2.2) and its light `point` variant, pure JAX.

A G×G grid of square cells (G = 4, cell 2 m: an 8 m × 8 m arena centred on
the origin) holds O coloured cells and W wall cells, placed as in the
gridworld (`gridworld_pinpad.sample_layout`: uniform, distinct, every colour
reachable from the start without crossing another colour). A body moves on
the plane; the cell under its centre is its cell (row 0 at +y, as the
gridworld's row 0 is at the top; off the arena: no cell). The pinpad rules
are the gridworld's (`pinpad_rules.visit_rules`): entering a colour cell
from another cell visits it, the next colour of the task advances it, any
other colour fails, the last one succeeds (reward 1, the only reward), and
the episode times out after T control steps. The body fails at once when its
centre enters a wall cell or, for the ant, when the torso's height leaves
[0.2, 1.0] m (walls have no collision geometry: entering one ends the
episode, docs/method.md §2.2).

Bodies (`ArenaParams.body`):
  'ant'    MuJoCo's quadruped (brax's `ant.xml`, shipped in the brax wheel:
           nothing is downloaded), 8 torques in [-1, 1], simulated with MJX
           with brax's MJX settings (Newton solver, 1 iteration, 4 line-search
           iterations, no Euler damping), timestep 0.01 s × 5 frames: one
           control step is 0.05 s, T = 500 steps is 25 s.
  'point'  a disc driven along x and y: the action [2] in [-1, 1] is its
           velocity in units of `point_speed` m/s, held for one control step
           of `point_dt` s; no physics engine, so thousands of episodes run on
           a laptop.

Reset: the body at a uniform point of the start cell; the ant with a
uniform yaw, its joint angles (brax's `init_qpos`) and velocities perturbed
by U(±0.1).

Observation (flat float32; `observation_layout` names the slices):
  proprio   symlog (sign(x)·log(1+|x|)) of the body's own state. Ant: qpos
            without x, y (torso height, orientation quaternion, 8 joint
            angles: 13) and qvel (14), brax's ant observation. Point: its
            velocity (2).
  xy        the centre's x, y divided by the arena's half width (±1 at the
            edges).
  colours   per colour, its cell centre minus the body's x, y, divided by the
            half width (2·O); world axes, not the body's.
  walls     the same for each wall cell, in wall-id order (2·W).
  local     the position inside the current cell, in [-1, 1]² (0 at the
            centre); off the arena, relative to the nearest cell (beyond ±1).
The task is not in the observation.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import importlib.resources
from typing import Any, Sequence

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from irl.envs import gridworld_pinpad
from irl.envs import pinpad_rules
from irl.envs import tasks as tasks_lib

BODIES = ('ant', 'point')
ANT_ACTION_DIM, POINT_ACTION_DIM = 8, 2
ANT_HEIGHT_RANGE = (0.2, 1.0)
_ANT_FRAMES = 5             # brax's ant: 5 × 0.01 s per control step
_ANT_TIMESTEP = 0.01        # ant.xml's <option timestep>
_RESET_NOISE = 0.1


@flax.struct.dataclass
class ArenaParams(pinpad_rules.PinpadParams):
  """Static parameters: `pinpad_rules.PinpadParams`' fields with the
  arena's defaults (4×4 cells, 4 colours, 1 wall, T = 500, one colour per
  subgoal), plus the body's."""
  grid_size: int = pinpad_rules.static(4)
  num_colours: int = pinpad_rules.static(4)
  num_walls: int = pinpad_rules.static(1)
  max_steps: int = pinpad_rules.static(500)
  tasks: tuple[tuple[int, ...], ...] = pinpad_rules.static(
      tasks_lib.ANT_PRETRAIN_TASKS)
  subgoal_size: int = pinpad_rules.static(1)
  body: str = pinpad_rules.static('ant')
  cell_size: float = pinpad_rules.static(2.0)
  point_speed: float = pinpad_rules.static(1.0)
  point_dt: float = pinpad_rules.static(0.25)
  # The trained expert's policy file (`irl.envs.arena_expert.rollout` reads
  # it); '' until one is trained. Data only, never the rules.
  expert: str = pinpad_rules.static('')

  @property
  def half_width(self) -> float:
    return self.grid_size * self.cell_size / 2

  @property
  def action_dim(self) -> int:
    return ANT_ACTION_DIM if self.body == 'ant' else POINT_ACTION_DIM

  @property
  def proprio_dim(self) -> int:
    return 27 if self.body == 'ant' else 2

  @property
  def obs_dim(self) -> int:
    return self.proprio_dim + 2 * (1 + self.num_colours + self.num_walls + 1)

  def grid_params(self) -> gridworld_pinpad.EnvParams:
    """The gridworld's parameters of the same layout (for `sample_layout`)."""
    return gridworld_pinpad.EnvParams(**{
        f.name: getattr(self, f.name)
        for f in dataclasses.fields(pinpad_rules.PinpadParams)})

  def validate(self) -> ArenaParams:
    """Raises ValueError naming the offending field; returns self."""
    if self.body not in BODIES:
      raise ValueError(f'env.body={self.body!r} is invalid: must be one of '
                       f'{list(BODIES)}')
    for name in ('cell_size', 'point_speed', 'point_dt'):
      if not getattr(self, name) > 0:
        raise ValueError(f'env.{name}={getattr(self, name)!r} is invalid: '
                         'must be > 0')
    return super().validate()


def observation_layout(params: ArenaParams) -> dict[str, slice]:
  """Name -> slice of the flat observation (module docstring)."""
  sizes = (('proprio', params.proprio_dim), ('xy', 2),
           ('colours', 2 * params.num_colours),
           ('walls', 2 * params.num_walls), ('local', 2))
  out, start = {}, 0
  for name, size in sizes:
    out[name] = slice(start, start + size)
    start += size
  return out


@flax.struct.dataclass
class ArenaState:
  physics: Any             # ant: mjx.Data; point: [2] velocity
  xy: chex.Array           # [2] the body's centre
  cell: chex.Array         # [] int32 cell under the centre, -1 off the arena
  grid: chex.Array         # [N] int32: -1, colour id, or O + wall id
  colour_cell: chex.Array  # [O] int32
  task: chex.Array         # [max_task_len] int32, padded with -1
  task_len: chex.Array     # [] int32
  task_id: chex.Array      # [] int32
  task_pos: chex.Array     # [] int32
  time: chex.Array         # [] int32
  visits: chex.Array       # [max_visits] int32
  num_visits: chex.Array   # [] int32
  done: chex.Array         # [] bool
  success: chex.Array      # [] bool
  key: chex.Array          # PRNG key of the episode (never advanced)
  episode: chex.Array      # [] int32


# ---------------------------------------------------------------------------
# Geometry.


def cell_centres(params: ArenaParams) -> np.ndarray:
  """[N, 2] x, y of each cell's centre (row-major, row 0 at +y)."""
  g, s, h = params.grid_size, params.cell_size, params.half_width
  rows, cols = np.divmod(np.arange(g * g), g)
  return np.stack([-h + (cols + 0.5) * s, h - (rows + 0.5) * s],
                  -1).astype(np.float32)


def _col_row(xy: jax.Array, params: ArenaParams) -> jax.Array:
  """[2] int32 (col, row) of the cell grid's square under `xy` (may lie off
  the arena)."""
  s, h = params.cell_size, params.half_width
  return jnp.floor((xy * jnp.array([1.0, -1.0]) + h) / s).astype(jnp.int32)


def cell_of(xy: jax.Array, params: ArenaParams) -> jax.Array:
  """[] int32 cell under `xy`, -1 off the arena."""
  g = params.grid_size
  col, row = _col_row(xy, params)
  inside = (col >= 0) & (col < g) & (row >= 0) & (row < g)
  return jnp.where(inside, row * g + col, -1)


def nearest_cell(xy: jax.Array, params: ArenaParams) -> jax.Array:
  """[] int32 the arena's cell nearest to `xy` (the cell under it inside)."""
  col, row = jnp.clip(_col_row(xy, params), 0, params.grid_size - 1)
  return row * params.grid_size + col


def _symlog(x: jax.Array) -> jax.Array:
  return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def observe(state: ArenaState, params: ArenaParams) -> jax.Array:
  """[obs_dim] float32 (module docstring)."""
  h, s = params.half_width, params.cell_size
  centres = jnp.asarray(cell_centres(params))
  if params.body == 'ant':
    proprio = jnp.concatenate([state.physics.qpos[2:], state.physics.qvel])
  else:
    proprio = state.physics
  o = params.num_colours
  # Wall cells in wall-id order (the grid holds O + wall id there).
  walls = jnp.argsort(jnp.where(state.grid >= o, state.grid,
                                jnp.iinfo(jnp.int32).max))[:params.num_walls]
  rel = lambda cells: ((centres[cells] - state.xy) / h).reshape(-1)
  centre = centres[nearest_cell(state.xy, params)]
  return jnp.concatenate([
      _symlog(proprio), state.xy / h, rel(state.colour_cell), rel(walls),
      (state.xy - centre) / (s / 2)]).astype(jnp.float32)


# ---------------------------------------------------------------------------
# The ant's MJX model.


def control_dt(params: ArenaParams) -> float:
  """Seconds per control step."""
  if params.body == 'ant':
    return _ANT_FRAMES * _ANT_TIMESTEP
  return params.point_dt


@functools.lru_cache(maxsize=None)
def ant_model() -> tuple[Any, np.ndarray]:
  """(mjx.Model, init_qpos [15]) of brax's ant with brax's MJX settings."""
  import mujoco  # noqa: PLC0415 (the gridworld does not need MuJoCo)
  from mujoco import mjx  # noqa: PLC0415
  path = importlib.resources.files('brax') / 'envs/assets/ant.xml'
  model = mujoco.MjModel.from_xml_path(str(path))
  model.opt.solver = mujoco.mjtSolver.mjSOL_NEWTON
  model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_EULERDAMP
  model.opt.iterations = 1
  model.opt.ls_iterations = 4
  init_qpos = np.array(model.numeric('init_qpos').data, np.float32)
  # Cached, so built outside any trace even when first asked for under one:
  # in a fresh thread, whose JAX contexts are the defaults (arrays made
  # under jit would be tracers, and under Brax's pmap they would carry its
  # manual mesh, which a later trace outside it refuses to mix with).
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    return pool.submit(mjx.put_model, model).result(), init_qpos


def _ant_reset(key: jax.Array, xy: jax.Array) -> Any:
  from mujoco import mjx  # noqa: PLC0415
  model, init_qpos = ant_model()
  k_yaw, k_q, k_v = jax.random.split(key, 3)
  yaw = jax.random.uniform(k_yaw, (), minval=-jnp.pi, maxval=jnp.pi)
  joints = jnp.asarray(init_qpos[7:]) + jax.random.uniform(
      k_q, (model.nq - 7,), minval=-_RESET_NOISE, maxval=_RESET_NOISE)
  qpos = jnp.concatenate([xy, jnp.asarray(init_qpos[2:3]),
                          jnp.array([jnp.cos(yaw / 2), 0.0, 0.0,
                                     jnp.sin(yaw / 2)]), joints])
  qvel = jax.random.uniform(k_v, (model.nv,), minval=-_RESET_NOISE,
                            maxval=_RESET_NOISE)
  data = mjx.make_data(model).replace(qpos=qpos, qvel=qvel)
  return mjx.forward(model, data)


def _ant_step(data: Any, action: jax.Array) -> Any:
  from mujoco import mjx  # noqa: PLC0415
  model, _ = ant_model()
  data = data.replace(ctrl=jnp.clip(action, -1.0, 1.0))
  return jax.lax.fori_loop(0, _ANT_FRAMES,
                           lambda _, d: mjx.step(model, d), data)


# ---------------------------------------------------------------------------
# reset / step.


def reset(key: jax.Array, params: ArenaParams,
          task_id: jax.Array | int | None = None
          ) -> tuple[ArenaState, jax.Array]:
  """New episode: a solvable layout, a task (uniform or `task_id`), the body
  at a uniform point of its start cell."""
  k_layout, k_task, k_point, k_body, k_state = jax.random.split(key, 5)
  grid_params = params.grid_params()
  table, lengths = gridworld_pinpad.tasks_array(grid_params)
  if task_id is None:
    task_id = jax.random.randint(k_task, (), 0, params.num_tasks)
  task_id = jnp.asarray(task_id, jnp.int32)
  layout = gridworld_pinpad.sample_layout(k_layout, grid_params)
  offset = jax.random.uniform(k_point, (2,), minval=-0.5, maxval=0.5)
  xy = (jnp.asarray(cell_centres(params))[layout.agent_cell]
        + offset * params.cell_size)
  physics = (_ant_reset(k_body, xy) if params.body == 'ant'
             else jnp.zeros(2, jnp.float32))
  state = ArenaState(
      # cell_of, not the start cell: a point on the cell's lower or right
      # edge belongs to the next cell, as it will on every step.
      physics=physics, xy=xy, cell=cell_of(xy, params), grid=layout.grid,
      colour_cell=layout.colour_cell, task=jnp.asarray(table)[task_id],
      task_len=jnp.asarray(lengths)[task_id], task_id=task_id,
      task_pos=jnp.int32(0), time=jnp.int32(0),
      visits=jnp.full((params.max_visits,), -1, jnp.int32),
      num_visits=jnp.int32(0), done=jnp.bool_(False),
      success=jnp.bool_(False), key=k_state, episode=jnp.int32(0))
  return state, observe(state, params)


def current_subgoal(state: ArenaState, params: ArenaParams) -> jax.Array:
  """[] int32 subgoal id pursued (colour // subgoal_size); -1 when done."""
  return gridworld_pinpad.current_subgoal(state, params)


def step(state: ArenaState, action: jax.Array, params: ArenaParams
         ) -> tuple[ArenaState, jax.Array, jax.Array, jax.Array, dict]:
  """One control step. A finished episode stays finished (frozen)."""
  action = jnp.asarray(action, jnp.float32)
  if params.body == 'ant':
    physics = _ant_step(state.physics, action)
    xy, height = physics.qpos[:2], physics.qpos[2]
    low, high = ANT_HEIGHT_RANGE
    fell = (height < low) | (height > high)
  else:
    physics = jnp.clip(action, -1.0, 1.0) * params.point_speed
    xy = state.xy + physics * params.point_dt
    fell = jnp.bool_(False)
  cell = cell_of(xy, params)
  content = jnp.where(cell >= 0, state.grid[jnp.maximum(cell, 0)], -1)
  o = params.num_colours
  is_visit = (cell != state.cell) & (content >= 0) & (content < o)
  crash = ((cell >= 0) & (content >= o)) | fell
  changes, reward, done, info = pinpad_rules.visit_rules(
      state, is_visit, content, max_visits=params.max_visits,
      max_steps=params.max_steps,
      terminate_on_wrong_colour=params.terminate_on_wrong_colour,
      crash=crash)
  keep = lambda old, new: jax.tree.map(
      lambda a, b: jnp.where(state.done, a, b), old, new)
  new_state = state.replace(physics=keep(state.physics, physics),
                            xy=keep(state.xy, xy),
                            cell=keep(state.cell, cell), **changes)
  info = {'subgoal': current_subgoal(new_state, params), **info,
          'crash': crash & ~state.done & ~info['success'],
          'xy': new_state.xy}
  return new_state, observe(new_state, params), reward, done, info


def params_from_config(env_config: Any, tasks: Sequence[Sequence[int]] | None
                       = None, **overrides) -> ArenaParams:
  """ArenaParams from the `env` section, validated; `overrides` set fields
  the section does not hold (the registry gives each name its `body`)."""
  return pinpad_rules.params_from_config(
      ArenaParams, env_config, tasks,
      cell_size=float(env_config.cell_size),
      point_speed=float(env_config.point_speed),
      point_dt=float(env_config.point_dt),
      expert=str(env_config.expert_checkpoint), **overrides)


# ---------------------------------------------------------------------------
# Drawing (host side).


def decode_observation(obs: np.ndarray, params: ArenaParams
                       ) -> tuple[np.ndarray, np.ndarray]:
  """One observation -> (grid [N] as in ArenaState, the body's x, y)."""
  obs = np.asarray(obs, np.float32)
  part = observation_layout(params)
  h = params.half_width
  xy = obs[part['xy']] * h
  grid = np.full(params.grid_size ** 2, -1, np.int32)
  centres = cell_centres(params)
  for i, name in enumerate(('colours', 'walls')):
    rel = obs[part[name]].reshape(-1, 2) * h + xy
    for j, point in enumerate(rel):
      cell = int(np.argmin(((centres - point) ** 2).sum(-1)))
      grid[cell] = j if i == 0 else params.num_colours + j
  return grid, xy


def render_observation(obs: np.ndarray, params: ArenaParams,
                       cell_px: int = 24
                       ) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
  """Top-down (RGB image [H, W, 3] uint8, colour-id labels in pixels) of
  what one observation shows; the body is a black dot at its x, y."""
  from irl.envs import gridworld_render  # noqa: PLC0415
  grid, xy = decode_observation(obs, params)
  g = params.grid_size
  img = np.empty((g, g, 3), np.uint8)
  img[:] = gridworld_render.FLOOR_RGB
  for c in range(params.num_colours):
    img[grid.reshape(g, g) == c] = gridworld_render.PALETTE[c]
  img[grid.reshape(g, g) >= params.num_colours] = gridworld_render.WALL_RGB
  img = np.repeat(np.repeat(img, cell_px, 0), cell_px, 1)
  img[::cell_px, :] = img[:, ::cell_px] = 200
  px = (xy * np.array([1.0, -1.0]) + params.half_width) / params.cell_size
  c, r = np.clip((px * cell_px).astype(int), 2, g * cell_px - 3)
  img[r - 2:r + 3, c - 2:c + 3] = gridworld_render.AGENT_RGB
  labels = [((cell % g + 0.5) * cell_px, (cell // g + 0.5) * cell_px,
             str(grid[cell])) for cell in np.nonzero(
                 (grid >= 0) & (grid < params.num_colours))[0]]
  return img, labels
