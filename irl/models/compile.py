"""CompILE (Kipf et al. 2019) in place of the metacontroller (docs/method.md §8.2).

CompILE segments an episode into at most N (= 4) segments, infers one latent
code z_i ∈ R^8 per segment and reconstructs the behaviour of each segment from
its code. Here the reconstruction is the *frozen* base model's next-action
likelihood while z_i's controller U_i = f_hyp(z_i) edits the residual stream at
layer L/2 ("controlling the same layer" as the metacontroller).

Components:

  CompileEncoder  raw observations -> h_t: the base model's lower half (its
                  observation encoder and L/2 causal blocks, own parameters)
  BoundaryHead    h_t -> boundary logit ℓ_t (one hidden layer of 32)
  LatentHead      segment-pooled h -> μ_i, log σ²_i (one hidden layer of 32)
  ControllerDecoder  z_i -> U_i (irl/models/controller.py, as the
                  metacontroller)

Boundaries. ℓ_t is read as a per-step *hazard*: β_t = sigmoid(ℓ_t) is the
probability that a new segment starts at t given that the current one started
before t. Boundary i (i = 1..N−1, τ_i the first step of segment i+1) is a
categorical over T + 1 slots, the T steps plus "no further boundary":

  q_i(τ = t) ∝ m_i(t) · β_t · Π_{s<t, valid} (1 − β_s)^{m_i(s)},   t ≥ 1 valid
  q_i(none)  ∝ Π_{s valid} (1 − β_s)^{m_i(s)}

with m_i(t) = P(all earlier boundaries < t) (1 before any; 0 at t = 0). With
hard earlier boundaries this is exactly a hazard process that starts after
τ_{i−1}; with relaxed ones it interpolates. Training draws b_i from the
Gumbel-softmax (concrete) relaxation of q_i at `temperature`; evaluation takes
argmax. Soft segment masks follow Kipf et al.: c_i(t) = Σ_{s≤t} b_i(s),
P_0 = 1, P_{i+1} = P_i c_i, seg_i = P_i (1 − c_i) (i < N−1), seg_{N−1} =
P_{N−1}; they telescope to Σ_i seg_i(t) = 1 at every t. Fewer than N segments
are chosen by putting boundaries on the "none" slot.

Latents: z_i ~ N(μ_i, σ²_i) from the seg_i-weighted mean of rms-normalised h
over valid steps (divided by max(mass, 1), so an empty segment reads ≈ 0).

Loss per episode (irl/train/compile.py): Σ_t valid_t Σ_i seg_i(t) NLL_i(t)
+ α_z Σ_i KL(N(μ_i, σ²_i) ‖ N(0, I)) + α_β KL_b, where NLL_i is the base
model's −ln p(a_t | o_{1:t}) with U_i applied at every step (the segments are
folded into the batch: one upper-half pass on N·B sequences), and KL_b =
(N − 1) · KL(q_1 ‖ Poisson prior) as in CompILE's reference code: the first
boundary against a Poisson(λ = `prior_rate`) law on the first segment's length
(slots t ≥ 1; "none" gets the Poisson tail P(K ≥ episode length)),
renormalised over the allowed slots.

Causal switching for internal RL: `irl/models/compile_adapter.py`.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp

from irl.models.config import ModelConfig
from irl.models.controller import ControllerDecoder
from irl.models.encoders import ObservationEncoder
from irl.models.hawk import HawkBlock, init_recurrent_cache
from irl.models.intervention import Intervention
from irl.models import common
from irl.models.common import gaussian_kl, read_residual
from irl.models.transformer import TransformerBlock, init_attention_cache

_NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class CompileConfig:
  """Sizes of the CompILE baseline (defaults: docs/method.md §8.2, gridworld).

  Attributes:
    model: the base model's `ModelConfig`; the encoder copies its lower half.
    layer: residual index written (L/2); also the encoder's number of blocks.
    max_segments: N, at most this many segments per episode.
    latent_dim: n_z.
    head_hidden: hidden width of the boundary and latent heads.
    decoder_hidden: hidden width of the hypernetwork z -> U.
    rank: r of U = A Bᵀ; None for a full n_e × n_e U.
    temperature: Gumbel-softmax temperature of the boundaries.
    prior_rate: λ of the Poisson prior on segment length; the hazard starts
      at 1/λ.
  """
  model: ModelConfig = ModelConfig()
  layer: int = 3
  max_segments: int = 4
  latent_dim: int = 8
  head_hidden: int = 32
  decoder_hidden: int = 32
  rank: int | None = 16
  temperature: float = 0.5
  prior_rate: float = 10.0

  @property
  def width(self) -> int:
    return self.model.width



@flax.struct.dataclass
class CompileOutput:
  """A batch of episodes through CompILE (float32).

  Attributes:
    boundary_logit: [B, T] ℓ_t (hazard logit, causal).
    switch_gate: [B, T] causal β_t = sigmoid(ℓ_t), with β_0 = 1.
    boundary_log_probs: [B, N−1, T+1] log q_i over the slots (last: none).
    boundaries: [B, N−1, T+1] b_i, relaxed or hard one-hot samples.
    segment_mask: [B, N, T] seg_i(t), sums to 1 over N.
    mean: [B, N, n_z] μ_i.
    log_var: [B, N, n_z] log σ²_i.
    latent_code: [B, N, n_z] z_i.
    kl_z: [B] Σ_i KL(N(μ_i, σ²_i) ‖ N(0, I)).
    kl_b: [B] (N − 1) KL(q_1 ‖ Poisson prior).
    controller: per-segment factors (A, B) [B, N, n_e, r] or (U,).
  """
  boundary_logit: jax.Array
  switch_gate: jax.Array
  boundary_log_probs: jax.Array
  boundaries: jax.Array
  segment_mask: jax.Array
  mean: jax.Array
  log_var: jax.Array
  latent_code: jax.Array
  kl_z: jax.Array
  kl_b: jax.Array
  controller: tuple[jax.Array, ...]


# --------------------------------------------------------------------------
# Pure segmentation functions.


def boundary_log_probs(logit: jax.Array, valid: jax.Array,
                       earlier: jax.Array) -> jax.Array:
  """log q_i over T + 1 slots for one boundary (see the module docstring).

  Args:
    logit: [B, T] hazard logits ℓ_t.
    valid: [B, T] bool prefix mask.
    earlier: [B, T] P_i(t) = P(all earlier boundaries ≤ t) (ones for i = 1).

  Returns:
    [B, T + 1] normalised log-probabilities; disallowed slots ≈ −1e30.
  """
  batch, seq_len = logit.shape
  at_risk = jnp.concatenate([jnp.zeros((batch, 1)), earlier[:, :-1]], 1)
  at_risk = at_risk * valid                                    # m_i(t)
  survive = at_risk * jax.nn.log_sigmoid(-logit)
  log_survival = jnp.cumsum(survive, 1) - survive              # Σ_{s<t}
  step = (jnp.log(jnp.maximum(at_risk, 1e-30)) + jax.nn.log_sigmoid(logit)
          + log_survival)
  allowed = valid & (jnp.arange(seq_len) >= 1)
  step = jnp.where(allowed, step, _NEG_INF)
  none = survive.sum(1, keepdims=True)
  return jax.nn.log_softmax(jnp.concatenate([step, none], 1), -1)


def segment_masks(boundaries: list[jax.Array]) -> jax.Array:
  """Kipf et al.'s soft segment masks from N − 1 boundaries [B, T + 1].

  Returns [B, N, T], non-negative and summing to 1 over N at every t.
  """
  seq_len = boundaries[0].shape[1] - 1
  earlier = jnp.ones(boundaries[0].shape[:1] + (seq_len,))
  masks = []
  for b in boundaries:
    c = jnp.cumsum(b[:, :seq_len], 1)
    masks.append(earlier * (1.0 - c))
    earlier = earlier * c
  masks.append(earlier)
  return jnp.stack(masks, 1)


def hard_segment_masks(boundaries: jax.Array, max_segments: int
                       ) -> jax.Array:
  """[B, T] bool step starts a new segment -> one-hot masks [B, N, T].

  t = 0 always starts segment 0; a boundary after the (N−1)-th is ignored,
  as in `compile_adapter.CompileAdapter` with `max_segments = N`.
  """
  starts = jnp.asarray(boundaries).at[:, 0].set(False).astype(jnp.int32)
  index = jnp.minimum(jnp.cumsum(starts, 1), max_segments - 1)
  return jnp.moveaxis(jax.nn.one_hot(index, max_segments), -1, 1)


def mask_boundaries(segment_mask: jax.Array) -> jax.Array:
  """[B, N, T] (hard) masks -> [B, T] bool: t ≥ 1 where the segment changes."""
  index = jnp.argmax(segment_mask, 1)
  change = index[:, 1:] != index[:, :-1]
  return jnp.concatenate([jnp.zeros_like(change[:, :1]), change], 1)


def poisson_log_prior(valid: jax.Array, rate: float) -> jax.Array:
  """[B, T + 1] log prior of the first boundary: Poisson(rate) length.

  Slot t ≥ 1 (valid) is a first segment of length t; the last slot takes the
  tail P(K ≥ episode length). Normalised over the allowed slots.
  """
  seq_len = valid.shape[1]
  k = jnp.arange(seq_len, dtype=jnp.float32)
  log_pmf = k * math.log(rate) - rate - jsp.gammaln(k + 1.0)
  allowed = valid & (jnp.arange(seq_len) >= 1)
  step = jnp.where(allowed, log_pmf, _NEG_INF)
  length = valid.sum(1).astype(jnp.float32)
  tail = jnp.log(jnp.maximum(jsp.gammainc(jnp.maximum(length, 1.0), rate),
                             1e-30))
  return jax.nn.log_softmax(jnp.concatenate([step, tail[:, None]], 1), -1)


def categorical_kl(log_q: jax.Array, log_p: jax.Array) -> jax.Array:
  """KL(q ‖ p) over the last axis; slots where q = 0 contribute nothing."""
  q = jnp.exp(log_q)
  return jnp.sum(jnp.where(q > 0, q * (log_q - log_p), 0.0), -1)


def step_controller(segment_mask: jax.Array,
                    factors: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
  """Per-step factors Σ_i seg_i(t) F_i: [B, N, T], [B, N, ...] -> [B, T, ...].

  With hard masks this is the controller of the segment active at t.
  """
  return tuple(jnp.einsum('bnt,bn...->bt...', segment_mask, f)
               for f in factors)


# --------------------------------------------------------------------------
# Modules.


class CompileEncoder(nn.Module):
  """The base model's lower half (own parameters): obs -> h_{1:T}.

  Submodule names match `BaseModel` ('obs_encoder', 'blocks_i'), so the
  encoder can start from θ's lower half by copying those parameters.
  """
  config: ModelConfig
  num_layers: int

  def setup(self) -> None:
    cfg = self.config
    dtype = cfg.compute_dtype
    self.obs_encoder = ObservationEncoder(cfg.width, cfg.obs_encoder,
                                          cfg.grid_size, dtype)
    if cfg.backbone == 'transformer':
      self.blocks = [TransformerBlock(cfg.width, cfg.num_heads, cfg.mlp_dim,
                                      cfg.num_buckets, cfg.max_distance,
                                      cfg.window(i), dtype)
                     for i in range(self.num_layers)]
    else:
      self.blocks = [HawkBlock(cfg.width, cfg.num_heads, cfg.mlp_dim,
                               cfg.conv_width, dtype)
                     for _ in range(self.num_layers)]

  def __call__(self, obs: jax.Array, cache: tuple | None = None
               ) -> tuple[jax.Array, tuple | None]:
    """obs: [B, T, obs_dim] -> (h [B, T, n_e] float32, updated cache)."""
    h = self.obs_encoder(obs)
    new_cache = []
    for i, block in enumerate(self.blocks):
      h, c = block(h, None if cache is None else cache[i])
      new_cache.append(c)
    return h.astype(jnp.float32), (None if cache is None
                                   else tuple(new_cache))


def init_encoder_cache(config: CompileConfig, batch_size: int) -> tuple:
  """Empty decoding cache of the encoder: one per block."""
  m = config.model
  if m.backbone == 'transformer':
    make = lambda: init_attention_cache(batch_size, m.max_len, m.num_heads,
                                        m.head_dim, m.compute_dtype)
  else:
    make = lambda: init_recurrent_cache(batch_size, m.width, m.conv_width,
                                        m.compute_dtype)
  return tuple(make() for _ in range(config.layer))


class BoundaryHead(nn.Module):
  """h_t -> hazard logit ℓ_t (one ReLU hidden layer)."""
  hidden: int = 32
  bias: float = 0.0

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    """[..., n_e] (normalised) -> [...]."""
    x = nn.relu(nn.Dense(self.hidden, name='hidden')(h))
    out = nn.Dense(1, bias_init=nn.initializers.constant(self.bias),
                   name='output')(x)
    return out[..., 0]


class LatentHead(nn.Module):
  """Pooled segment encoding -> (μ, log σ²) (one ReLU hidden layer)."""
  latent_dim: int = 8
  hidden: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[..., n_e] -> ([..., n_z], [..., n_z])."""
    return common.gaussian_head(x, self.hidden, self.latent_dim)


class CompILE(nn.Module):
  """Raw observations -> segments, codes z_i and controllers U_i.

  Parameters: {'encoder', 'boundary', 'latent', 'decoder'}.
  """
  config: CompileConfig

  def setup(self) -> None:
    cfg = self.config
    self.encoder = CompileEncoder(cfg.model, cfg.layer)
    self.boundary = BoundaryHead(cfg.head_hidden,
                                 -math.log(cfg.prior_rate - 1.0))
    self.latent = LatentHead(cfg.latent_dim, cfg.head_hidden)
    self.decoder = ControllerDecoder(cfg.width, cfg.rank, cfg.decoder_hidden)

  def __call__(self, obs: jax.Array, valid: jax.Array,
               gumbel: jax.Array | None = None,
               noise: jax.Array | None = None,
               boundaries: jax.Array | None = None) -> CompileOutput:
    """Segments whole episodes.

    Args:
      obs: [B, T, obs_dim] raw observations.
      valid: [B, T] bool prefix mask.
      gumbel: [B, N−1, T+1] Gumbel noise: relaxed boundary samples; None:
        hard argmax boundaries (evaluation).
      noise: [B, N, n_z] standard normal ε for z = μ + σ ε; None: ε = 0.
      boundaries: optional [B, T] bool hard segment starts that replace the
        inferred ones (see `hard_segment_masks`).
    """
    cfg = self.config
    batch, seq_len = valid.shape
    num = cfg.max_segments
    h, _ = self.encoder(obs)
    x = read_residual(h)
    logit = self.boundary(x).astype(jnp.float32)
    validf = valid.astype(jnp.float32)
    earlier = jnp.ones((batch, seq_len))
    log_probs, samples = [], []
    for i in range(num - 1):
      log_q = boundary_log_probs(logit, valid, earlier)
      if gumbel is None:
        b = jax.nn.one_hot(jnp.argmax(log_q, -1), seq_len + 1)
      else:
        b = jax.nn.softmax((log_q + gumbel[:, i]) / cfg.temperature, -1)
      earlier = earlier * jnp.cumsum(b[:, :seq_len], 1)
      log_probs.append(log_q)
      samples.append(b)
    if boundaries is None:
      seg = segment_masks(samples)
    else:
      seg = hard_segment_masks(boundaries, num)
    weight = seg * validf[:, None]                              # [B, N, T]
    pooled = jnp.einsum('bnt,btd->bnd', weight, x) / jnp.maximum(
        weight.sum(-1, keepdims=True), 1.0)
    mean, log_var = self.latent(read_residual(pooled))
    z = mean if noise is None else mean + jnp.exp(0.5 * log_var) * noise
    log_probs = jnp.stack(log_probs, 1)
    kl_b = (num - 1) * categorical_kl(
        log_probs[:, 0], poisson_log_prior(valid, cfg.prior_rate))
    first = jnp.arange(seq_len) == 0
    return CompileOutput(
        boundary_logit=logit,
        switch_gate=jnp.where(first, 1.0, jax.nn.sigmoid(logit)),
        boundary_log_probs=log_probs, boundaries=jnp.stack(samples, 1),
        segment_mask=seg, mean=mean, log_var=log_var, latent_code=z,
        kl_z=gaussian_kl(mean, log_var).sum(-1), kl_b=kl_b,
        controller=self.decoder(z))

  def encode_step(self, obs: jax.Array, cache: tuple
                  ) -> tuple[jax.Array, tuple]:
    """obs: [B, obs_dim] o_t -> (ℓ_t [B], cache with o_t appended)."""
    h, cache = self.encoder(obs[:, None], cache)
    return self.boundary(read_residual(h[:, 0])).astype(jnp.float32), cache

  def controller(self, latent_code: jax.Array) -> tuple[jax.Array, ...]:
    """z [..., n_z] -> U factors [..., n_e, r] (or [..., n_e, n_e])."""
    return self.decoder(latent_code)

  @nn.nowrap
  def intervention(self, factors: tuple[jax.Array, ...]) -> Intervention:
    """Factors [B, T, ...] (or [B, 1, ...]) -> the base model's edit."""
    return Intervention.from_factors(self.config.layer, factors)
