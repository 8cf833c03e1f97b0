"""Hawk (Griffin paper, De et al. 2024): pre-norm RG-LRU residual blocks.

Block: x += recurrent_block(norm(x)); x += mlp(norm(x)), with a ReLU MLP (the
paper uses ReLU here, Griffin a gated GeLU). Recurrent block:
  out = Linear( GeLU(Linear(x)) * RG-LRU(Conv1D(Linear(x))) ).
RG-LRU (width = model width, gates block-diagonal over `num_heads`):
  r_t = sigmoid(W_a x_t + b_a),  i_t = sigmoid(W_x x_t + b_x),
  log a_t = -c softplus(Lambda) r_t,  c = 8,
  h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * x_t),  h_{-1} = 0.
The sqrt(1 - a^2) factor is applied at every step, t = 0 included (Griffin's
code skips it at a document start), so that an episode packed after another
computes what it computes alone.

Packed rows (`segments`, the episode index of each step, as recurrentgemma's
`segment_pos`): where a new episode starts, the carried RG-LRU state and the
Conv1D's view of earlier steps are zeroed, the same reset that `reset_cache`
applies to a decoding cache when an episode ends.
The recurrence runs in float32 whatever the compute dtype: a_t is close to 1
and bfloat16 would round it away.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from irl.models import common


@flax.struct.dataclass
class RecurrentCache:
  """Decoding state of one Hawk block.

  Attributes:
    rnn_state: [B, width] float32, the RG-LRU hidden state h_{t-1}.
    conv_state: [B, conv_width - 1, width], the last inputs of the Conv1D
      (oldest first), zero before the sequence starts.
  """
  rnn_state: jax.Array
  conv_state: jax.Array


def init_recurrent_cache(batch_size: int, width: int, conv_width: int,
                         dtype: jnp.dtype = jnp.float32) -> RecurrentCache:
  """The state before the first step (all zeros)."""
  return RecurrentCache(
      rnn_state=jnp.zeros((batch_size, width), jnp.float32),
      conv_state=jnp.zeros((batch_size, conv_width - 1, width), dtype))


def lambda_init(min_rad: float = 0.9, max_rad: float = 0.999):
  """Initialiser for Lambda with a = exp(-softplus(Lambda)) in [min, max].

  a^2 is uniform in [min^2, max^2] (uniform on a ring, as in Griffin's code).
  """
  def init(key: jax.Array, shape: Sequence[int],
           dtype: jnp.dtype = jnp.float32) -> jax.Array:
    a_sq = jax.random.uniform(key, shape, jnp.float32, min_rad**2, max_rad**2)
    # softplus(Lambda) = -log a  <=>  Lambda = log(1/a - 1).
    return jnp.log(jax.lax.rsqrt(a_sq) - 1.0).astype(dtype)
  return init


@jax.custom_vjp
def _sqrt_bounded_grad(x: jax.Array) -> jax.Array:
  """sqrt(x) whose derivative is capped at 1000 (x -> 0 when a_t -> 1)."""
  return jnp.sqrt(x)


def _sqrt_fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  return jnp.sqrt(x), x


def _sqrt_bwd(x: jax.Array, g: jax.Array) -> tuple[jax.Array]:
  max_grad = 1000.0
  return (g * 0.5 * jax.lax.rsqrt(jnp.maximum(x, 1 / (4 * max_grad**2))),)


_sqrt_bounded_grad.defvjp(_sqrt_fwd, _sqrt_bwd)


def _linear_recurrence(a: jax.Array, u: jax.Array, h0: jax.Array | None,
                       starts: jax.Array | None = None
                       ) -> tuple[jax.Array, jax.Array]:
  """h_t = a_t h_{t-1} + u_t over axis 1 of a, u: [B, T, W], from h0 (or 0);
  h_{t-1} is zeroed where starts [B, T] (a new episode) is true.

  A sequential `lax.scan`: the per-step work is tiny, and on CPU it costs
  less than `associative_scan` (whose strided slices and pads, and their
  transposes in the backward pass, touch every element log T times).

  Returns:
    (h: [B, T, W], h_{T-1}: [B, W]).
  """
  if h0 is None:
    h0 = jnp.zeros((a.shape[0], a.shape[2]), a.dtype)
  if starts is not None:
    # Zeroing h_{t-1} is zeroing the multiplier a_t: the scan stays as is.
    a = jnp.where(starts[..., None], jnp.zeros_like(a), a)
  if a.shape[1] == 1:                                  # Decoding: one step.
    h = a[:, 0] * h0 + u[:, 0]
    return h[:, None], h

  def step(h, au):
    h = au[0] * h + au[1]
    return h, h

  time_major = lambda y: jnp.swapaxes(y, 0, 1)
  h_last, h = jax.lax.scan(step, h0, (time_major(a), time_major(u)))
  return time_major(h), h_last


@jax.custom_vjp
def _causal_taps(padded: jax.Array, kernel: jax.Array) -> jax.Array:
  """y[:, t] = sum_s padded[:, t + s] * kernel[s]: [B, K-1+T, W] -> [B, T, W].

  The custom gradient is the same tap loop over the gradient (padded on both
  sides, kernel reversed) plus one reduction per tap for the kernel; autodiff
  of the slices instead materialises a padded copy of the gradient per tap.
  """
  taps, steps = kernel.shape[0], padded.shape[1] - kernel.shape[0] + 1
  y = padded[:, 0:steps] * kernel[0]
  for s in range(1, taps):                          # Loop over taps only.
    y = y + padded[:, s:s + steps] * kernel[s]
  return y


def _causal_taps_fwd(padded, kernel):
  return _causal_taps(padded, kernel), (padded, kernel)


def _causal_taps_bwd(res, g):
  padded, kernel = res
  lag, steps = kernel.shape[0] - 1, g.shape[1]
  # d padded[t'] = sum_s g[t' - s] kernel[s], for t' in [0, lag + T).
  g_padded = jnp.pad(g, ((0, 0), (lag, lag), (0, 0)))
  d_padded = _causal_taps(g_padded, kernel[::-1])
  g32 = g.astype(jnp.float32)
  d_kernel = jnp.stack([
      jnp.sum(g32 * padded[:, s:s + steps].astype(jnp.float32), axis=(0, 1))
      for s in range(lag + 1)]).astype(kernel.dtype)
  return d_padded, d_kernel


_causal_taps.defvjp(_causal_taps_fwd, _causal_taps_bwd)


class BlockDiagonalLinear(nn.Module):
  """y = x W + b with W block-diagonal over `num_blocks` blocks (float32)."""
  width: int
  num_blocks: int

  def setup(self) -> None:
    block = self.width // self.num_blocks
    init = nn.initializers.variance_scaling(
        0.1, 'fan_in', 'truncated_normal', in_axis=-2, out_axis=-1,
        batch_axis=(0,))
    self.kernel = self.param('kernel', init,
                             (self.num_blocks, block, block), jnp.float32)
    self.bias = self.param('bias', nn.initializers.zeros,
                           (self.num_blocks, block), jnp.float32)

  def __call__(self, x: jax.Array) -> jax.Array:
    """[..., width] -> [..., width]."""
    blocks = x.reshape(*x.shape[:-1], self.num_blocks, -1)
    y = jnp.einsum('...hi,hij->...hj', blocks, self.kernel) + self.bias
    return y.reshape(x.shape)


class RGLRU(nn.Module):
  """Real-Gated Linear Recurrent Unit over a chunk of time steps."""
  width: int
  num_heads: int
  c: float = 8.0

  def setup(self) -> None:
    self.a_param = self.param('a_param', lambda_init(), (self.width,),
                              jnp.float32)
    self.input_gate = BlockDiagonalLinear(self.width, self.num_heads)
    self.a_gate = BlockDiagonalLinear(self.width, self.num_heads)

  def __call__(self, x: jax.Array, h0: jax.Array | None = None,
               starts: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
    """Runs the recurrence over the chunk x: [B, T, width].

    Args:
      x: [B, T, width] inputs.
      h0: [B, width] float32 state before the chunk, or None for zeros.
      starts: [B, T] bool, true where an episode starts (state zeroed), or
        None.

    Returns:
      (h: [B, T, width] in x.dtype, h_last: [B, width] float32).
    """
    x32 = x.astype(jnp.float32)
    # Both gates in one block-diagonal product (their kernels side by side),
    # with the heads moved to the front explicitly: a plain batched matmul
    # over heads. Left to itself, XLA runs '...hi,hij->...hj' on transposed
    # [H, block, B*T] layouts, re-reading its producers column by column.
    block = self.width // self.num_heads
    kernel = jnp.concatenate([self.input_gate.kernel, self.a_gate.kernel], -1)
    bias = jnp.concatenate([self.input_gate.bias, self.a_gate.bias], -1)
    heads_first = jnp.moveaxis(x32.reshape(-1, self.num_heads, block), 1, 0)
    gates = jnp.einsum('hmi,hij->hmj', heads_first, kernel)   # [H, B*T, 2blk]
    gates = jax.nn.sigmoid(jnp.moveaxis(gates, 0, 1).reshape(
        *x.shape[:-1], self.num_heads, 2 * block) + bias)
    gate_x = gates[..., :block].reshape(x.shape)
    gate_a = gates[..., block:].reshape(x.shape)
    log_a = -self.c * gate_a * jax.nn.softplus(self.a_param)
    a = jnp.exp(log_a)
    # expm1 keeps 1 - a^2 accurate when a is close to 1.
    u = _sqrt_bounded_grad(-jnp.expm1(2.0 * log_a)) * (gate_x * x32)
    h, h_last = _linear_recurrence(a, u, h0, starts)
    return h.astype(x.dtype), h_last


class Conv1D(nn.Module):
  """Causal depthwise temporal convolution (kernel[-1] sees the present)."""
  width: int
  conv_width: int = 4
  dtype: common.Dtype = jnp.float32

  def setup(self) -> None:
    self.kernel = self.param('kernel', common.KERNEL_INIT,
                             (self.conv_width, self.width), jnp.float32)
    self.bias = self.param('bias', nn.initializers.zeros, (self.width,),
                           jnp.float32)

  def __call__(self, x: jax.Array, state: jax.Array | None = None,
               segments: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array | None]:
    """x: [B, T, width]; state: [B, conv_width - 1, width] or None (zeros);
    segments: [B, T] episode index per step (taps see their episode only).

    Returns ([B, T, width], the last conv_width - 1 inputs or None).
    """
    batch, seq_len, width = x.shape
    lag = self.conv_width - 1
    prefix = (jnp.zeros((batch, lag, width), x.dtype) if state is None
              else state.astype(x.dtype))
    padded = jnp.concatenate([prefix, x], axis=1)   # [B, lag + T, width]
    kernel = self.kernel.astype(x.dtype)
    if segments is None:
      y = _causal_taps(padded, kernel)
    else:
      # Tap s reads step t - (lag - s): zero where that is another episode
      # (the prefix belongs to the first step's episode).
      seg = jnp.concatenate([jnp.repeat(segments[:, :1], lag, 1), segments],
                            axis=1)
      y = sum(padded[:, s:s + seq_len] * kernel[s]
              * (seg[:, s:s + seq_len] == segments)[..., None].astype(x.dtype)
              for s in range(lag + 1))
    y = y + self.bias.astype(x.dtype)
    new_state = None if state is None else padded[:, seq_len:].astype(
        state.dtype)
    return y, new_state


class RecurrentBlock(nn.Module):
  """Griffin's recurrent block: GeLU gate branch times Conv1D -> RG-LRU."""
  width: int
  num_heads: int
  conv_width: int = 4
  dtype: common.Dtype = jnp.float32

  def setup(self) -> None:
    self.gate_proj = common.dense(self.width, self.dtype)
    self.rec_proj = common.dense(self.width, self.dtype)
    self.conv = Conv1D(self.width, self.conv_width, self.dtype)
    self.rg_lru = RGLRU(self.width, self.num_heads)
    self.out_proj = common.dense(self.width, self.dtype)

  def __call__(self, x: jax.Array, cache: RecurrentCache | None = None,
               segments: jax.Array | None = None
               ) -> tuple[jax.Array, RecurrentCache | None]:
    """[B, T, width] -> ([B, T, width], updated cache or None); segments
    [B, T] episode index per step (packed rows) or None."""
    gate = nn.gelu(self.gate_proj(x))
    h = self.rec_proj(x)
    starts = None
    if segments is not None:
      starts = jnp.concatenate(
          [jnp.zeros_like(segments[:, :1], bool),
           segments[:, 1:] != segments[:, :-1]], axis=1)
    h, conv_state = self.conv(h, None if cache is None else cache.conv_state,
                              segments)
    h, rnn_state = self.rg_lru(h, None if cache is None else cache.rnn_state,
                               starts)
    out = self.out_proj(h * gate)
    if cache is None:
      return out, None
    return out, RecurrentCache(rnn_state=rnn_state, conv_state=conv_state)


class HawkBlock(nn.Module):
  """Pre-norm block: x += recurrent_block(norm(x)); x += mlp(norm(x))."""
  width: int
  num_heads: int
  mlp_dim: int
  conv_width: int = 4
  dtype: common.Dtype = jnp.float32

  def setup(self) -> None:
    self.rec_norm = common.norm(self.dtype)
    self.recurrent = RecurrentBlock(self.width, self.num_heads,
                                    self.conv_width, self.dtype)
    self.mlp_norm = common.norm(self.dtype)
    self.mlp = common.MLP(self.width, self.mlp_dim, self.dtype)

  def __call__(self, x: jax.Array, cache: RecurrentCache | None = None,
               segments: jax.Array | None = None
               ) -> tuple[jax.Array, RecurrentCache | None]:
    """[B, T, width] -> ([B, T, width], updated cache or None); segments
    as `RecurrentBlock`."""
    mixed, cache = self.recurrent(self.rec_norm(x), cache, segments)
    x = x + mixed.astype(x.dtype)
    x = x + self.mlp(self.mlp_norm(x)).astype(x.dtype)
    return x, cache
