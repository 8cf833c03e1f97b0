"""The metacontroller (docs/method.md §6): reads e_{t,L/2}, writes U_t back into it.

Components, each its own module:

  SequenceEmbedder   non-causal: bidirectional Hawk over e_{1:T} -> s ∈ R^32
  HistoryGRU         h_t = GRU(e_t, h_{t-1}) ∈ R^32
  ControllerEncoder  (e_t, h_{t-1}, s) -> μ_t, log σ²_t;  z̃_t = μ_t + σ_t ε_t
  SwitchingUnit      β_t = f_switch(e_t, h_{t-1}, z_{t-1}) ∈ [0, 1]  (no s)
  MetacontrollerCell one causal raw step: switch, integrate, GRU update
                     z_t = β_t z̃_t + (1 − β_t) z_{t-1}
  ControllerDecoder  z_t -> U_t (rank r or full; irl/models/controller.py)

`Metacontroller.__call__` runs the whole sequence: the embedder and the
decoder in parallel over time, the encoder and the cell inside one `nn.scan`
(a true sequential recurrence: β_t sees the code z_{t-1} actually in use).
`Metacontroller.step` is the causal part alone, one raw step at a time, with
the proposal z̃_t supplied by the caller (internal RL's policy replaces the
encoder); the scan calls the very same `MetacontrollerCell`.

Choices where the paper is silent:
- Reading the stream: every component reads e_t / rms(e_t) (a parameter-free
  RMS normalisation), because the scale of the residual stream depends on the
  base model and its training; U_t acts on the raw e_t.
- β is one scalar per step (not per latent dimension): a switch replaces the
  whole abstract action, switches can be counted, and internal RL acts when
  the one gate fires.
- β_0 ≡ 1 (the first step of an episode always takes a fresh code) and
  z_{-1} = 0, h_{-1} = 0. With β_0 = 1 the implied prior of z_0 is N(0, I),
  so the KL term of the loss is exact at t = 0 too; the learned gate still
  runs at t = 0, its value is overridden. Segmentation scores ignore t = 0.
- f_switch: MLP([e_t, h_{t-1}, z_{t-1}]) with one ReLU hidden layer (64) and
  a sigmoid on one output; its output bias starts at 0 (β = 0.5).
- GRU input: the normalised e_t only (flax GRUCell, width 32). The GRU does
  not read z: h_t is a causal summary of the stream that the encoder and the
  switching unit share.
- Sequence embedder: Dense(n_e -> 64), then one Hawk block (RG-LRU, 4 gate
  heads, Conv1D width 4, MLP 128) forward in time and a second one, with its
  own parameters, on the sequence reversed within each episode's valid length
  (padding never reaches a valid step in either direction). The two blocks
  are one `nn.vmap`ped HawkBlock over a leading direction axis (parameters
  [2, ...]: 0 forward, 1 backward), which halves what XLA compiles. Their
  outputs are concatenated, mean-pooled over the valid steps, normalised and
  projected to s ∈ R^32.
- Encoder: MLP([e_t, h_{t-1}, s]) with one ReLU hidden layer (64) -> μ_t and
  log σ²_t (clipped to [-10, 5]); its output layer starts small, so z̃_t
  starts close to N(0, I).
- Noise ε_t is an input ([B, T, n_z]); None means ε = 0 (the posterior mean),
  which is what evaluation uses.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from irl.models import common
from irl.models.common import gaussian_kl, read_residual
from irl.models.controller import ControllerDecoder
from irl.models.hawk import HawkBlock
from irl.models.intervention import HyperFull, HyperLowRank, Intervention


@dataclasses.dataclass(frozen=True)
class MetacontrollerConfig:
  """Sizes of the metacontroller (defaults: docs/method.md §6, gridworld).

  Attributes:
    width: residual-stream width n_e of the base model.
    layer: residual index the metacontroller reads and writes (L/2).
    latent_dim: n_z, size of the latent code z.
    embed_dim: size of the sequence embedding s.
    embed_width: width of the bidirectional Hawk layers of the embedder.
    embed_heads: RG-LRU gate blocks of the embedder (divides embed_width).
    history_dim: width of the history GRU.
    encoder_hidden: hidden width of the controller encoder.
    switch_hidden: hidden width of the switching unit.
    switch_bias: initial bias of the gate's logit (β ≈ sigmoid(bias) at
      init; > 0 starts from switching often).
    decoder_hidden: hidden width of the hypernetwork decoder.
    rank: rank r of U = A Bᵀ; None for a full n_e × n_e U.
    decoder_init_scale: `ControllerDecoder.init_scale` (0: U = 0 at init for
      every code).
    always_switch: β ≡ 1 (the baseline without temporal abstraction).
  """
  width: int = 256
  layer: int = 3
  latent_dim: int = 8
  embed_dim: int = 32
  embed_width: int = 64
  embed_heads: int = 4
  history_dim: int = 32
  encoder_hidden: int = 64
  switch_hidden: int = 64
  switch_bias: float = 0.0
  decoder_hidden: int = 32
  rank: int | None = 16
  decoder_init_scale: float = 0.0
  always_switch: bool = False



@flax.struct.dataclass
class MetacontrollerState:
  """What the causal part carries from one raw step to the next.

  Attributes:
    history: [B, history_dim] h_{t-1}.
    latent_code: [B, latent_dim] z_{t-1}, the code in use.
    first: [B] bool, the next step is the first of an episode (β := 1).
  """
  history: jax.Array
  latent_code: jax.Array
  first: jax.Array


def initial_state(config: MetacontrollerConfig, batch_size: int
                  ) -> MetacontrollerState:
  """h_{-1} = 0, z_{-1} = 0, first = True."""
  return MetacontrollerState(
      history=jnp.zeros((batch_size, config.history_dim), jnp.float32),
      latent_code=jnp.zeros((batch_size, config.latent_dim), jnp.float32),
      first=jnp.ones((batch_size,), bool))


@flax.struct.dataclass
class StepOutput:
  """One raw step of the causal part.

  Attributes:
    switch_gate: [B] β_t (1 at an episode's first step).
    latent_code: [B, latent_dim] z_t, the code in use at t.
  """
  switch_gate: jax.Array
  latent_code: jax.Array


@flax.struct.dataclass
class MetacontrollerOutput:
  """A whole sequence through the metacontroller (float32).

  Attributes:
    switch_gate: [B, T] β_t.
    latent_code: [B, T, n_z] z_t (integrated, the code in use).
    proposal: [B, T, n_z] z̃_t (encoder sample).
    mean: [B, T, n_z] μ_t.
    log_var: [B, T, n_z] log σ²_t.
    kl: [B, T] KL(N(μ_t, σ²_t) ‖ N(0, I)).
    sequence_embedding: [B, embed_dim] s.
    controller: U_t factored through the decoder's weights: low rank a
      `HyperLowRank` (`.factors()` gives (A, B) [B, T, n_e, r]), full rank
      a `HyperFull` (`.matrix()` gives U [B, T, n_e, n_e]).
    state: the `MetacontrollerState` after the last step.
  """
  switch_gate: jax.Array
  latent_code: jax.Array
  proposal: jax.Array
  mean: jax.Array
  log_var: jax.Array
  kl: jax.Array
  sequence_embedding: jax.Array
  controller: HyperLowRank | HyperFull
  state: MetacontrollerState


def reverse_valid(x: jax.Array, valid: jax.Array) -> jax.Array:
  """Reverses x: [B, T, ...] in time within each row's valid prefix.

  Steps past the valid length stay where they are, so a causal pass over the
  result reads an episode backwards and never sees its padding. The map is
  its own inverse. `valid` must be a prefix mask (episodes end, never resume).
  """
  seq_len = x.shape[1]
  length = valid.sum(-1, dtype=jnp.int32)[:, None]           # [B, 1]
  t = jnp.arange(seq_len)[None, :]
  index = jnp.where(t < length, length - 1 - t, t)            # [B, T]
  index = index.reshape(index.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, index, axis=1)


class SequenceEmbedder(nn.Module):
  """Non-causal embedding s of a whole episode e_{1:T} (bidirectional Hawk)."""
  features: int = 32
  width: int = 64
  num_heads: int = 4
  conv_width: int = 4

  @nn.compact
  def __call__(self, e: jax.Array, valid: jax.Array) -> jax.Array:
    """e: [B, T, n_e] (normalised), valid: [B, T] prefix mask -> [B, features]."""
    x = common.dense(self.width, jnp.float32, name='input')(e)
    directions = nn.vmap(HawkBlock, variable_axes={'params': 0},
                         split_rngs={'params': True}, in_axes=0, out_axes=0)
    h, _ = directions(self.width, self.num_heads, 2 * self.width,
                      self.conv_width, name='directions')(
                          jnp.stack([x, reverse_valid(x, valid)]))
    h = jnp.concatenate([h[0], reverse_valid(h[1], valid)], -1)
    mask = valid.astype(h.dtype)[..., None]
    pooled = (h * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)
    return nn.Dense(self.features, name='output')(read_residual(pooled))


class HistoryGRU(nn.Module):
  """h_t = GRU(e_t, h_{t-1})."""
  features: int = 32

  @nn.compact
  def __call__(self, history: jax.Array, e: jax.Array) -> jax.Array:
    """history: [B, features], e: [B, n_e] (normalised) -> [B, features]."""
    new, _ = nn.GRUCell(self.features, name='cell')(history, e)
    return new


class ControllerEncoder(nn.Module):
  """MLP(e_t, h_{t-1}, s) -> (μ_t, log σ²_t)."""
  latent_dim: int = 8
  hidden: int = 64

  @nn.compact
  def __call__(self, e: jax.Array, history: jax.Array,
               embedding: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[B, n_e], [B, n_h], [B, n_s] -> ([B, n_z], [B, n_z])."""
    x = jnp.concatenate([e, history, embedding], -1)
    return common.gaussian_head(x, self.hidden, self.latent_dim)


class SwitchingUnit(nn.Module):
  """β_t = sigmoid(MLP(e_t, h_{t-1}, z_{t-1})): causal, never sees s."""
  hidden: int = 64
  bias: float = 0.0

  @nn.compact
  def __call__(self, e: jax.Array, history: jax.Array,
               latent_code: jax.Array) -> jax.Array:
    """[B, n_e], [B, n_h], [B, n_z] -> [B] in [0, 1]."""
    x = jnp.concatenate([e, history, latent_code], -1)
    x = nn.relu(nn.Dense(self.hidden, name='hidden')(x))
    logit = nn.Dense(1, kernel_init=nn.initializers.lecun_normal(),
                     bias_init=nn.initializers.constant(self.bias),
                     name='output')(x)
    return jax.nn.sigmoid(logit[..., 0])


class MetacontrollerCell(nn.Module):
  """One causal raw step: β_t, z_t = β_t z̃_t + (1 − β_t) z_{t-1}, h_t.

  The same cell runs inside the training scan and, step by step, in internal
  RL. The encoder (or the RL policy) is outside: it supplies z̃_t.
  """
  config: MetacontrollerConfig

  def setup(self) -> None:
    self.history = HistoryGRU(self.config.history_dim)
    self.switch_gate = SwitchingUnit(self.config.switch_hidden,
                                     self.config.switch_bias)

  def __call__(self, state: MetacontrollerState, e: jax.Array,
               proposal: jax.Array, switch_gate: jax.Array | None = None
               ) -> tuple[MetacontrollerState, StepOutput]:
    """state; e: [B, n_e] normalised e_t; proposal: [B, n_z] z̃_t.

    switch_gate: [B] β_t to use instead of the learned one (e.g. internal
    RL's hard switch, learned β ≥ 0.5); first steps still take β = 1.
    """
    if switch_gate is None:
      beta = self.gate(state, e)
    else:
      beta = jnp.where(state.first, 1.0, switch_gate.astype(jnp.float32))
    beta_ = beta[:, None]
    code = beta_ * proposal + (1.0 - beta_) * state.latent_code
    history = self.history(state.history, e)
    new = MetacontrollerState(history=history, latent_code=code,
                              first=jnp.zeros_like(state.first))
    return new, StepOutput(switch_gate=beta, latent_code=code)

  def gate(self, state: MetacontrollerState, e: jax.Array) -> jax.Array:
    """[B] β_t from e_t, h_{t-1}, z_{t-1} (1 on first steps, or if β ≡ 1)."""
    beta = self.switch_gate(e, state.history, state.latent_code)
    if self.config.always_switch:
      beta = jnp.ones_like(beta)
    return jnp.where(state.first, 1.0, beta)


class _PosteriorStep(nn.Module):
  """The scan body of training: encoder, then the cell (parameters of both)."""
  config: MetacontrollerConfig

  def setup(self) -> None:
    self.encoder = ControllerEncoder(self.config.latent_dim,
                                     self.config.encoder_hidden)
    self.cell = MetacontrollerCell(self.config)

  def __call__(self, state: MetacontrollerState,
               inputs: tuple[jax.Array, jax.Array], embedding: jax.Array):
    e, noise = inputs
    mean, log_var = self.encoder(e, state.history, embedding)
    proposal = mean + jnp.exp(0.5 * log_var) * noise
    state, out = self.cell(state, e, proposal)
    return state, (out, proposal, mean, log_var)


class Metacontroller(nn.Module):
  """e_{1:T} at layer `config.layer` -> controllers U_{1:T} (docs/method.md §6).

  Parameters: {'embedder', 'posterior': {'encoder', 'cell': {'history',
  'switch_gate'}}, 'decoder'}.
  """
  config: MetacontrollerConfig

  def setup(self) -> None:
    cfg = self.config
    self.embedder = SequenceEmbedder(cfg.embed_dim, cfg.embed_width,
                                     cfg.embed_heads)
    self.posterior = _PosteriorStep(cfg)
    self.decoder = ControllerDecoder(cfg.width, cfg.rank, cfg.decoder_hidden,
                                     cfg.decoder_init_scale)

  def __call__(self, e: jax.Array, valid: jax.Array,
               noise: jax.Array | None = None,
               state: MetacontrollerState | None = None
               ) -> MetacontrollerOutput:
    """Runs the metacontroller over whole episodes.

    Args:
      e: [B, T, n_e] residual stream e_{1:T} at `config.layer` (clean).
      valid: [B, T] bool prefix mask of the real steps.
      noise: [B, T, n_z] standard normal ε_t, or None for ε = 0.
      state: the state before the first step (default: a fresh episode).
    """
    batch, seq_len, _ = e.shape
    x = read_residual(e)
    embedding = self.embedder(x, valid)
    if noise is None:
      noise = jnp.zeros((batch, seq_len, self.config.latent_dim), jnp.float32)
    if state is None:
      state = initial_state(self.config, batch)
    scan = nn.scan(lambda m, carry, xs, s: m(carry, xs, s),
                   variable_broadcast='params', split_rngs={'params': False},
                   in_axes=(1, nn.broadcast), out_axes=1)
    state, (steps, proposal, mean, log_var) = scan(
        self.posterior, state, (x, noise), embedding)
    return MetacontrollerOutput(
        switch_gate=steps.switch_gate, latent_code=steps.latent_code,
        proposal=proposal, mean=mean, log_var=log_var,
        kl=gaussian_kl(mean, log_var), sequence_embedding=embedding,
        controller=self.decoder(steps.latent_code, factored=True),
        state=state)

  def step(self, state: MetacontrollerState, e: jax.Array,
           proposal: jax.Array, switch_gate: jax.Array | None = None
           ) -> tuple[MetacontrollerState, StepOutput, tuple[jax.Array, ...]]:
    """One causal raw step, as in the scan, with z̃_t given.

    Internal RL: beta = switch(state, e_t); where beta >= 0.5 the policy
    draws z̃_t; step(state, e_t, z̃_t, switch_gate=beta >= 0.5) keeps z_{t-1}
    elsewhere; the returned factors make U_t for `BaseModel.upper`.

    Args:
      state: carried from the previous step (`initial_state` at t = 0).
      e: [B, n_e] raw residual e_t at `config.layer`.
      proposal: [B, n_z] z̃_t (e.g. from internal RL's policy).
      switch_gate: optional [B] β_t replacing the learned gate.

    Returns:
      (state after t, StepOutput(β_t, z_t), controller factors of z_t, each
      [B, n_e, r] or [B, n_e, n_e]).
    """
    state, out = self.posterior.cell(state, read_residual(e), proposal,
                                     switch_gate)
    return state, out, self.decoder(out.latent_code)

  def switch(self, state: MetacontrollerState, e: jax.Array) -> jax.Array:
    """[B] β_t for e_t: [B, n_e] raw, without advancing the state."""
    return self.posterior.cell.gate(state, read_residual(e))

  def controller(self, latent_code: jax.Array) -> tuple[jax.Array, ...]:
    """z [..., n_z] -> U factors [..., n_e, r] (or [..., n_e, n_e])."""
    return self.decoder(latent_code)

  @nn.nowrap
  def intervention(self,
                   factors: tuple[jax.Array, ...] | HyperLowRank | HyperFull
                   ) -> Intervention:
    """Controller factors [B, T, ...] (or factored) -> an `Intervention`."""
    return Intervention.from_factors(self.config.layer, factors)

  @nn.nowrap
  def initial_state(self, batch_size: int) -> MetacontrollerState:
    return initial_state(self.config, batch_size)
