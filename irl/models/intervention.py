"""The residual-stream intervention e_l <- e_l + U_t e_l, as a pytree.

One class covers both the low-rank controller U = A B^T (gridworld, rank 16)
and the full-rank U (ant); the forward pass has one code path for both and for
"no intervention" (`None`). `layer` is static (part of the treedef), so a
jitted function recompiles per layer but never branches on traced data.

U may also come factored (`HyperLowRank`, `HyperFull`): A_t and B_t, or U_t
itself, an affine map of a per-step code h_t, as the last layer of the
controller decoder makes them. The edit is then matmuls against the
decoder's weights, and neither it nor its gradient builds the per-step
factors: the low-rank factors' weight gradient was half of a metacontroller
training step on a CPU, and building the full U ([B, T, width, width]) cost
a fifth of the point body's metacontroller step (0.59 against 0.74 steps/s).
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Intervention:
  """e_l <- e_l + U_t e_l at residual index `layer` (0 <= layer <= L).

  Give either `a` and `b` (low rank, U = A B^T) or `u` (full rank). Leading
  dimensions broadcast against the residual's [B, T]: [B, T, ...] gives a
  per-example, per-step U; [width, r] alone gives one U for every position.

  Attributes:
    layer: residual index to edit (static).
    a: [B, T, width, r] low-rank factor A, or None.
    b: [B, T, width, r] low-rank factor B, or None.
    u: [B, T, width, width] full matrix U (row = output), or None.
    hyper: a factored U (`HyperLowRank` or `HyperFull`), or None.
  """
  layer: int = flax.struct.field(pytree_node=False)
  a: jax.Array | None = None
  b: jax.Array | None = None
  u: jax.Array | None = None
  hyper: HyperLowRank | HyperFull | None = None

  @classmethod
  def low_rank(cls, layer: int, a: jax.Array, b: jax.Array) -> Intervention:
    """U = A B^T with a, b: [B, T, width, r]."""
    if jnp.shape(a) != jnp.shape(b):
      raise ValueError(f'a and b must have one shape, got {jnp.shape(a)} and '
                       f'{jnp.shape(b)}.')
    return cls(layer=layer, a=a, b=b)

  @classmethod
  def full(cls, layer: int, u: jax.Array) -> Intervention:
    """Full-rank U with u: [B, T, width, width]."""
    return cls(layer=layer, u=u)

  @classmethod
  def from_factors(cls, layer: int,
                   factors: tuple[jax.Array, ...] | HyperLowRank | HyperFull
                   ) -> Intervention:
    """A hypernetwork's output: (A, B) for U = A B^T, (U,) full rank, or a
    factored `HyperLowRank` / `HyperFull`."""
    if isinstance(factors, (HyperLowRank, HyperFull)):
      return cls(layer=layer, hyper=factors)
    if len(factors) == 1:
      return cls.full(layer, factors[0])
    return cls.low_rank(layer, *factors)

  @classmethod
  def zeros(cls, layer: int, batch_size: int, seq_len: int, width: int,
            rank: int | None = None,
            dtype: jnp.dtype = jnp.float32) -> Intervention:
    """A zero (identity) intervention; low rank if `rank` is given."""
    if rank is None:
      return cls.full(layer, jnp.zeros((batch_size, seq_len, width, width),
                                       dtype))
    z = jnp.zeros((batch_size, seq_len, width, rank), dtype)
    return cls.low_rank(layer, z, z)

  @property
  def is_low_rank(self) -> bool:
    return self.u is None and not isinstance(self.hyper, HyperFull)

  def apply(self, e: jax.Array) -> jax.Array:
    """Returns e + U e for e: [B, T, width]; exact identity when U = 0."""
    width = e.shape[-1]
    if self.hyper is not None:
      if self.a is not None or self.b is not None or self.u is not None:
        raise ValueError('Intervention needs one of (a, b), u or hyper.')
      delta = self.hyper.delta(e)
    elif self.is_low_rank:
      if self.a is None or self.b is None or self.u is not None:
        raise ValueError('Intervention needs either (a, b) or u, not both.')
      if self.a.shape[-2] != width or self.b.shape[-2] != width:
        raise ValueError(f'a, b of shape {self.a.shape} do not match the '
                         f'residual width {width}.')
      # A (B^T e): never build the width x width matrix.
      coeff = jnp.einsum('...ir,...i->...r', self.b, e)
      delta = jnp.einsum('...ir,...r->...i', self.a, coeff)
    else:
      if self.a is not None or self.b is not None:
        raise ValueError('Intervention needs either (a, b) or u, not both.')
      if self.u.shape[-2:] != (width, width):
        raise ValueError(f'u of shape {self.u.shape} does not match the '
                         f'residual width {width}.')
      delta = jnp.einsum('...ij,...j->...i', self.u, e)
    return e + delta.astype(e.dtype)


@flax.struct.dataclass
class HyperLowRank:
  """U_t = A_t B_tᵀ with A_t, B_t affine in a per-step code h_t, unbuilt.

  A_t = reshape(h_t @ a_kernel + a_bias, [width, r]), B_t likewise: the last
  layer of a hypernetwork (irl/models/controller.py) with h_t its hidden
  activation. Leading dimensions of h broadcast against the residual's.

  Attributes:
    h: [B, T, k] per-step code.
    a_kernel, b_kernel: [k, width * r].
    a_bias, b_bias: [width * r].
    rank: r (static).
  """
  h: jax.Array
  a_kernel: jax.Array
  a_bias: jax.Array
  b_kernel: jax.Array
  b_bias: jax.Array
  rank: int = flax.struct.field(pytree_node=False)

  def factors(self) -> tuple[jax.Array, jax.Array]:
    """The per-step (A, B), each [B, T, width, r]."""
    width = self.a_bias.shape[-1] // self.rank
    shape = self.h.shape[:-1] + (width, self.rank)
    return ((self.h @ self.a_kernel + self.a_bias).reshape(shape),
            (self.h @ self.b_kernel + self.b_bias).reshape(shape))

  def delta(self, e: jax.Array) -> jax.Array:
    """U_t e_t for e: [B, T, width] as matmuls against the kernels.

    Bᵀe = Σ_k h_k (K_bᵀ e)_k + b_bᵀ e, then A c = K_aᵀ (h ⊗ c) + b_a c, with
    K the kernels seen as [k, width, r]."""
    k, r = self.h.shape[-1], self.rank
    width = e.shape[-1]
    if self.a_bias.shape[-1] != width * r:
      raise ValueError(f'hyper factors of width {self.a_bias.shape[-1] // r} '
                       f'do not match the residual width {width}.')
    kb = self.b_kernel.reshape(k, width, r)
    per_k = jnp.einsum('...i,kir->...kr', e, kb)                # [.., k, r]
    coeff = (jnp.einsum('...k,...kr->...r', self.h, per_k)
             + e @ self.b_bias.reshape(width, r))               # [.., r]
    outer = (self.h[..., :, None] * coeff[..., None, :]).reshape(
        coeff.shape[:-1] + (k * r,))
    ka = self.a_kernel.reshape(k, width, r).transpose(0, 2, 1).reshape(
        k * r, width)
    return outer @ ka + coeff @ self.a_bias.reshape(width, r).T


@flax.struct.dataclass
class HyperFull:
  """A full U_t = reshape(h_t @ kernel + bias, [width, width]), unbuilt.

  The last layer of a hypernetwork (irl/models/controller.py) with h_t its
  hidden activation; rows of U are outputs, as in `Intervention.u`.

  Attributes:
    h: [B, T, k] per-step code.
    kernel: [k, width * width].
    bias: [width * width].
  """
  h: jax.Array
  kernel: jax.Array
  bias: jax.Array

  def matrix(self) -> jax.Array:
    """The per-step U, [B, T, width, width]."""
    width = _square_width(self.bias.shape[-1])
    return (self.h @ self.kernel + self.bias).reshape(
        self.h.shape[:-1] + (width, width))

  def delta(self, e: jax.Array) -> jax.Array:
    """U_t e_t for e: [B, T, width] as Σ_k h_k (K_k e) + b e, with the kernel
    seen as k matrices K_k [width, width]: one [.., width] x [width, k·width]
    matmul, never the [.., width, width] U."""
    k, width = self.h.shape[-1], e.shape[-1]
    if self.bias.shape[-1] != width * width:
      raise ValueError(f'a full U of width {_square_width(self.bias.shape[-1])}'
                       f' does not match the residual width {width}.')
    per_k = jnp.einsum('...j,kij->...ki', e,
                       self.kernel.reshape(k, width, width))    # [.., k, n]
    return (jnp.einsum('...k,...ki->...i', self.h, per_k)
            + e @ self.bias.reshape(width, width).T)


def _square_width(size: int) -> int:
  return int(round(size ** 0.5))
