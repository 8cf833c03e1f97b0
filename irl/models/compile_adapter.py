"""CompILE as a causal switch and controller for internal RL.

Since the encoder is causal, β_t = sigmoid(ℓ_t) depends on o_{1:t} only:
the hazard of irl/models/compile.py, i.e. the training model's own
conditional boundary probability. β_0 := 1 (every episode starts
a segment). `CompileAdapter` runs it step by step with an encoder KV cache:

  adapter = CompileAdapter(model, max_segments=0)   # 0: no cap in RL
  state = adapter.initial_state(B)                  # CompileState
  beta = adapter.switch(params, state, obs_t)       # [B]; does not advance
  fire = beta >= 0.5                                # caller's rule
  state, factors = adapter.advance(params, state, obs_t, z, fire)
  iv = adapter.intervention(factors)                # [B, 1, ...] for upper
  state = adapter.reset(state, done)                # auto-reset episodes

`switch` and `advance` both run the encoder step on obs_t (switch discards
the new cache); inside one jit XLA computes it once. `advance` takes z where
`fire` (or at an episode's first step) and keeps the code in use elsewhere.
With `max_segments = N > 0` no switch happens once N segments have started
(the CompILE cap); the default lets RL switch as often as β says. The
controller at step t is that of the segment active at t, as in the parallel
forward with the same hard boundaries (`__call__(..., boundaries=...)`).
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from irl.models import common
from irl.models.compile import CompILE, init_encoder_cache
from irl.models.intervention import Intervention

@flax.struct.dataclass
class CompileState:
  """What the causal switch carries between raw steps.

  Attributes:
    cache: the encoder's per-block decoding cache (o_{<t}).
    latent_code: [B, n_z] the code in use (0 before the first step).
    segments: [B] int32 segments started so far (0: next step is first).
  """
  cache: tuple
  latent_code: jax.Array
  segments: jax.Array


@dataclasses.dataclass(frozen=True)
class CompileAdapter:
  """Step-by-step CompILE switching and control (see the module docstring).

  Attributes:
    model: the `CompILE` module whose parameters are passed to each call.
    max_segments: 0: no cap; N > 0: no switch after N segments started.
  """
  model: CompILE
  max_segments: int = 0

  def initial_state(self, batch_size: int) -> CompileState:
    cfg = self.model.config
    return CompileState(
        cache=init_encoder_cache(cfg, batch_size),
        latent_code=jnp.zeros((batch_size, cfg.latent_dim), jnp.float32),
        segments=jnp.zeros((batch_size,), jnp.int32))

  def reset(self, state: CompileState, done: jax.Array) -> CompileState:
    """Restarts the episodes where done: [B] bool."""
    return common.select_where(done, jax.tree.map(jnp.zeros_like, state),
                               state)

  def _gate(self, state: CompileState, logit: jax.Array) -> jax.Array:
    beta = jax.nn.sigmoid(logit)
    if self.max_segments:
      beta = jnp.where(state.segments >= self.max_segments, 0.0, beta)
    return jnp.where(state.segments == 0, 1.0, beta)

  def switch(self, params, state: CompileState, obs: jax.Array) -> jax.Array:
    """[B] β_t for o_t: [B, obs_dim], from o_{1:t} only; state unchanged."""
    logit, _ = self.model.apply(params, obs, state.cache,
                                method=CompILE.encode_step)
    return self._gate(state, logit)

  def advance(self, params, state: CompileState, obs: jax.Array,
              latent_code: jax.Array, fire: jax.Array
              ) -> tuple[CompileState, tuple[jax.Array, ...]]:
    """Consumes o_t: [B, obs_dim]; takes z: [B, n_z] where fire: [B] bool
    (always at an episode's first step; never past the cap).

    Returns (state after t, factors of the code in use at t, each
    [B, n_e, r] or [B, n_e, n_e]).
    """
    _, cache = self.model.apply(params, obs, state.cache,
                                method=CompILE.encode_step)
    first = state.segments == 0
    fire = fire.astype(bool)
    if self.max_segments:
      fire = fire & (state.segments < self.max_segments)
    fire = fire | first
    code = jnp.where(fire[:, None], latent_code.astype(jnp.float32),
                     state.latent_code)
    state = CompileState(cache=cache, latent_code=code,
                         segments=state.segments + fire.astype(jnp.int32))
    factors = self.model.apply(params, code, method=CompILE.controller)
    return state, factors

  def intervention(self, factors: tuple[jax.Array, ...]) -> Intervention:
    """One step's factors [B, ...] -> `Intervention` for a T = 1 `upper`."""
    return self.model.intervention(tuple(f[:, None] for f in factors))
