"""`ModelConfig`: the frozen, hashable description of a base model."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

BACKBONES = ('transformer', 'hawk')
ACTION_TYPES = ('discrete', 'continuous')
DTYPES = ('float32', 'bfloat16')
ENCODERS = ('linear', 'egocentric_grid')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of the base model (defaults: the gridworld Transformer).

  Attributes:
    backbone: 'transformer' (causal, T5 relative-position bias) or 'hawk'
      (RG-LRU recurrent blocks, Griffin paper).
    num_layers: number of residual blocks L; the residual stream has L+1
      entries (l=0 is the observation embedding).
    width: residual-stream width n_e.
    num_heads: attention heads (transformer) or RG-LRU gate blocks (hawk).
    mlp_dim: hidden width of the ReLU MLP of every block.
    obs_dim: observation size; also the size of the next-observation head.
    action_type: 'discrete' (categorical over `num_actions`) or 'continuous'
      (diagonal Gaussian over `action_dim`).
    num_actions: number of discrete actions (used when discrete).
    action_dim: continuous action size (used when continuous).
    num_buckets: T5 relative-position buckets (transformer).
    max_distance: distance from which all offsets share the last bucket.
    attention_window: W > 0 lets each step attend to itself and the W - 1
      steps before it (sliding-window attention, transformer); 0: the whole
      past (the paper's model).
    attention_window_blocks: the blocks (0-based indices) that have the
      window; the others attend to the whole past. (): every block.
    conv_width: temporal width of the causal Conv1D (hawk).
    max_len: KV-cache length (transformer); total decoded steps must not
      exceed it.
    dtype: compute dtype; parameters are always float32.
    obs_encoder: 'linear' or 'egocentric_grid' (see irl/models/encoders.py;
      the latter needs the gridworld one-hot layout with `grid_size`).
    grid_size: G of the gridworld observation (egocentric encoder only).
    future_actions: K extra categorical heads predicting a_{t+1..t+K} from
      o_{1:t}, trained by an auxiliary pretraining loss (discrete actions
      only; 0, the paper's model, has none). See irl/train/losses.py.
  """
  backbone: str = 'transformer'
  num_layers: int = 6
  width: int = 256
  num_heads: int = 4
  mlp_dim: int = 512
  obs_dim: int = 637
  action_type: str = 'discrete'
  num_actions: int = 4
  action_dim: int = 8
  num_buckets: int = 32
  max_distance: int = 128
  attention_window: int = 0
  attention_window_blocks: tuple[int, ...] = ()
  conv_width: int = 4
  max_len: int = 128
  dtype: str = 'float32'
  obs_encoder: str = 'linear'
  grid_size: int = 7
  future_actions: int = 0

  def window(self, block: int) -> int:
    """The attention window of block `block` (0: the whole past)."""
    if self.attention_window_blocks and (
        block not in self.attention_window_blocks):
      return 0
    return self.attention_window

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  def validate(self) -> ModelConfig:
    """Raises `ValueError` naming the first bad field; returns `self`."""
    _check_choice('backbone', self.backbone, BACKBONES)
    _check_choice('action_type', self.action_type, ACTION_TYPES)
    _check_choice('dtype', self.dtype, DTYPES)
    _check_choice('obs_encoder', self.obs_encoder, ENCODERS)
    if (self.obs_encoder == 'egocentric_grid'
        and self.obs_dim % (self.grid_size * self.grid_size)):
      raise ValueError(f'obs_dim={self.obs_dim} is not a G*G={self.grid_size}'
                       f'^2 grid of channels (obs_encoder=egocentric_grid).')
    for name in ('num_layers', 'width', 'num_heads', 'mlp_dim', 'obs_dim',
                 'conv_width', 'max_len'):
      require_int(name, getattr(self, name))
    if self.width % self.num_heads:
      raise ValueError(
          f'width={self.width} must be divisible by num_heads='
          f'{self.num_heads}.')
    if self.action_type == 'discrete':
      require_int('num_actions', self.num_actions)
    else:
      require_int('action_dim', self.action_dim)
    require_int('num_buckets', self.num_buckets)
    require_int('future_actions', self.future_actions, minimum=0)
    require_int('attention_window', self.attention_window, minimum=0)
    if any(not 0 <= b < self.num_layers for b in self.attention_window_blocks):
      raise ValueError(
          f'attention_window_blocks={self.attention_window_blocks} must be '
          f'block indices in [0, {self.num_layers - 1}].')
    if self.future_actions and self.action_type != 'discrete':
      raise ValueError(f'future_actions={self.future_actions} needs '
                       "action_type='discrete' (got "
                       f'{self.action_type!r}); use 0.')
    if self.num_buckets < 2:
      raise ValueError(f'num_buckets={self.num_buckets} must be >= 2.')
    require_int('max_distance', self.max_distance)
    # The log-spaced buckets divide by log(max_distance / (num_buckets // 2)).
    if self.max_distance <= self.num_buckets // 2:
      raise ValueError(
          f'max_distance={self.max_distance} must exceed num_buckets // 2 = '
          f'{self.num_buckets // 2}.')
    return self


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
  if value not in allowed:
    raise ValueError(f'{name}={value!r} is not one of {set(allowed)}.')


def require_int(name: str, value: object, minimum: int = 1) -> None:
  """ValueError naming the model field `name` unless `value` is an integer
  (not a bool) >= `minimum`."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f'{name}={value!r} must be an integer >= {minimum}.')
