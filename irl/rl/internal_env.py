"""The internal environment of internal RL (docs/method.md §7).

The frozen base model θ (cached single-step decoding), a frozen
abstract-action module (the metacontroller's switching unit and controller
decoder) and the gridworld form one environment whose action is a latent
code z ∈ R^{n_z}. One abstract step applies z until the switching gate fires:

  repeat { U = f_hyp(z); a ~ upper(e + U e); o = env.step(a); e = lower(o);
           β = f_switch(e, z, h) }  until β ≥ threshold or the episode ends,

with at least one raw step; the rewards of the raw steps are summed, and the
residual e (clean, at the module's layer) of the observation where the gate
fired is what the policy reads next.

Everything is batched over a leading [B] axis of episodes and jittable; an
abstract step is a `lax.while_loop` over raw steps in which the episodes
whose abstract action has ended (or whose episode has) are masked, so
episodes that finish at different raw steps need no Python loop.

Two schedules of the same raw step (`InternalEnv.raw_step`):
- `InternalEnv.step(params, state, z)`: one abstract step, the environment
  API. Under a batch it costs max over episodes of the abstract action's
  length per call.
- `irl.rl.rollouts` runs whole episodes as one flat loop over raw steps and
  lets the policy act inline, at the raw steps where the gate fired (masked
  elsewhere). Per episode this is exactly the sequence of abstract steps
  (same randomness: action noise is keyed by the episode and raw time), at
  the cost of T raw steps per batch rather than Σ_k max_b (length of the k-th
  abstract action).

The abstract-action module is a small interface (`AbstractActionModule`) so
other ways of discovering abstract actions plug in: the metacontroller
(`metacontroller_module`) and CompILE (`compile_module`, around
irl/models/compile_adapter.py's `CompileAdapter`, whose encoder reads
observations).

Choices where the paper is silent:
- The gate fires where β ≥ `switch_threshold` (0.5); at an episode's first
  step it always fires (β_0 = 1). Where it fires the module takes the new
  proposal z̃ outright (hard switch, z_t = z̃_t), elsewhere keeps z_{t-1}.
- Abstract decisions per episode are capped at `max_decisions` (static
  buffers): an episode that needs one more decision than that ends there,
  unsuccessful (`truncated`). With `max_decisions >= env.max_steps` nothing
  is ever truncated.
- Base-model actions are sampled at `temperature` (1.0), with a key derived
  from the episode's key and the raw time step, so the two schedules above
  draw identical actions.
- Masking a waiting episode's KV cache only holds back its write position:
  the slot it wrote is overwritten, before it is read, by its next real step.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from irl import acting
from irl.envs import registry
from irl.models import BaseModel, common, init_cache
from irl.models import metacontroller as mc_lib
from irl.models.intervention import Intervention
from irl.models.transformer import AttentionCache


class AbstractActionModule(NamedTuple):
  """What internal RL needs of a (frozen) abstract-action model.

  Attributes:
    layer: residual index read and written (the base model splits there).
    latent_dim: n_z, the size of the policy's action z.
    initial_state: B -> module state pytree with a leading [B] axis.
    switch: (params, state, e [B, n_e], obs [B, obs_dim]) -> β [B] in
      [0, 1] at step t from the clean residual e_t (the metacontroller) or
      the observation o_t (CompILE's encoder), without advancing the state
      (not called at an episode's first step, which is always a decision).
    advance: (params, state, e [B, n_e], obs [B, obs_dim], z̃ [B, n_z],
      fire [B] bool) -> (state after t, `Intervention` with [B, 1, ...]
      factors at `layer`): where fire the new code is z̃, elsewhere the code
      in use is kept.
  """
  layer: int
  latent_dim: int
  initial_state: Callable[[int], Any]
  switch: Callable[[Any, Any, jax.Array, jax.Array], jax.Array]
  advance: Callable[[Any, Any, jax.Array, jax.Array, jax.Array, jax.Array],
                    tuple[Any, Intervention]]


def metacontroller_module(metacontroller: mc_lib.Metacontroller
                          ) -> AbstractActionModule:
  """The metacontroller's causal part (GRU, switching unit, decoder) as an
  `AbstractActionModule`; its parameters are the metacontroller's φ."""
  mc = metacontroller

  def switch(params, state, e, obs):
    del obs
    return mc.apply(params, state, e, method=mc_lib.Metacontroller.switch)

  def advance(params, state, e, obs, proposal, fire):
    del obs
    state, _, factors = mc.apply(params, state, e, proposal,
                                 fire.astype(jnp.float32),
                                 method=mc_lib.Metacontroller.step)
    return state, mc.intervention(tuple(f[:, None] for f in factors))

  return AbstractActionModule(
      layer=mc.config.layer, latent_dim=mc.config.latent_dim,
      initial_state=mc.initial_state, switch=switch, advance=advance)


def compile_module(adapter: Any) -> AbstractActionModule:
  """CompILE's `CompileAdapter` (irl/models/compile_adapter.py) as an
  `AbstractActionModule`: its causal encoder reads the raw observations and
  its controller decoder edits the same layer; parameters: CompILE's φ."""
  cfg = adapter.model.config

  def switch(params, state, e, obs):
    del e
    return adapter.switch(params, state, obs)

  def advance(params, state, e, obs, proposal, fire):
    del e
    state, factors = adapter.advance(params, state, obs, proposal, fire)
    return state, adapter.intervention(factors)

  return AbstractActionModule(
      layer=cfg.layer, latent_dim=cfg.latent_dim,
      initial_state=adapter.initial_state, switch=switch, advance=advance)


@flax.struct.dataclass
class InternalEnvParams:
  """The frozen parts of the environment (a pytree passed to jitted code).

  Attributes:
    base: base-model parameters θ (pretrained, or co-trained).
    module: abstract-action module parameters (e.g. the metacontroller's φ).
  """
  base: Any
  module: Any


@flax.struct.dataclass
class InternalEnvState:
  """A batch of internal-environment episodes.

  Attributes:
    env: gridworld state [B].
    cache: base-model decoding cache [B].
    module: abstract-action module state [B].
    observation: [B, obs_dim] the latest observation o_t.
    residual: [B, n_e] clean e_t at the module's layer for o_t (what the
      policy reads when the gate has fired).
    switch_gate: [B] β_t for that residual (1 at an episode's start).
    key: [B] per-episode PRNG keys (action noise: fold_in(key, raw time)).
    done: [B] bool, episode over (success, failure, timeout or truncation).
    truncated: [B] bool, ended for want of a decision slot.
    decisions: [B] int32 abstract decisions taken.
    raw_steps: [B] int32 raw environment steps taken.
    episode_return: [B] float32 reward so far.
  """
  env: Any             # the raw environment's state
  cache: Any
  module: Any
  observation: jax.Array
  residual: jax.Array
  switch_gate: jax.Array
  key: jax.Array
  done: jax.Array
  truncated: jax.Array
  decisions: jax.Array
  raw_steps: jax.Array
  episode_return: jax.Array


def _mask_cache(new: Any, old: Any, active: jax.Array) -> Any:
  """Advances the caches of active episodes only.

  Transformer caches: only the write position is held back (the slot a
  waiting episode wrote is rewritten by its next real step before any read),
  which avoids copying the whole KV cache every step. Recurrent caches are
  small and selected whole.
  """
  def one(n, o):
    if isinstance(n, AttentionCache):
      return n.replace(pos=jnp.where(active, n.pos, o.pos))
    return common.select_where(active, n, o)
  return tuple(one(n, o) for n, o in zip(new, old))


class InternalEnv(NamedTuple):
  """The internal environment: pure, batched, jittable functions.

  Attributes:
    model: the base model (frozen).
    module: the abstract-action module (frozen).
    env_params: the raw environment's parameters (the RL task).
    switch_threshold: the gate fires where β ≥ this.
    max_decisions: cap on abstract decisions per episode (see module doc).
    temperature: sampling temperature of the base model's actions.
    env: the raw environment (`irl.envs.registry`; tests may script one).
  """
  model: BaseModel
  module: AbstractActionModule
  env: registry.Environment
  env_params: Any
  switch_threshold: float = 0.5
  max_decisions: int = 100
  temperature: float = 1.0

  @property
  def latent_dim(self) -> int:
    return self.module.latent_dim

  @property
  def layer(self) -> int:
    return self.module.layer

  @property
  def max_steps(self) -> int:
    return self.env_params.max_steps

  @property
  def raw_env(self) -> acting.BatchedEnv:
    """The raw environment, batched."""
    return self.env.batched(self.env_params)

  def as_env(self, params: InternalEnvParams) -> acting.BatchedEnv:
    """The raw-step schedule as a batched environment for `acting.unroll`:
    its observation is the residual e, its action the proposal z̃ (taken only
    where the gate fired, see `fires`), and its done covers truncation."""
    def step(state, proposal):
      state, reward = self.raw_step(params, state, proposal,
                                    self.fires(state), ~state.done)
      return state, state.residual, reward, state.done, {}

    return acting.BatchedEnv(
        reset=lambda key, batch_size: self.reset(params, key, batch_size),
        step=step)

  def lower(self, params: InternalEnvParams, obs: jax.Array, cache: Any
            ) -> tuple[jax.Array, Any]:
    """obs [B, obs_dim] -> (clean e [B, n_e] at the layer, cache)."""
    e, _, cache = self.model.apply(params.base, obs[:, None], self.layer,
                                   cache, method=BaseModel.lower)
    return e[:, 0], cache

  def reset(self, params: InternalEnvParams, key: jax.Array, batch_size: int
            ) -> tuple[InternalEnvState, jax.Array]:
    """B new episodes; returns (state, e_0 [B, n_e]). The gate fires at t=0."""
    k_env, k_ep = jax.random.split(key)
    env, obs = self.raw_env.reset(k_env, batch_size)
    cache = init_cache(self.model.config, batch_size)
    e, cache = self.lower(params, obs, cache)
    module = self.module.initial_state(batch_size)
    zeros_i = jnp.zeros((batch_size,), jnp.int32)
    zeros_b = jnp.zeros((batch_size,), bool)
    # The first step of an episode is always a decision.
    state = InternalEnvState(
        env=env, cache=cache, module=module, observation=obs, residual=e,
        switch_gate=jnp.ones((batch_size,), jnp.float32),
        key=jax.random.split(k_ep, batch_size), done=zeros_b,
        truncated=zeros_b, decisions=zeros_i, raw_steps=zeros_i,
        episode_return=jnp.zeros((batch_size,), jnp.float32))
    return state, e

  def fires(self, state: InternalEnvState) -> jax.Array:
    """[B] bool: the live episodes whose gate fired (they need a decision)."""
    return ~state.done & (state.switch_gate >= self.switch_threshold)

  def raw_step(self, params: InternalEnvParams, state: InternalEnvState,
               proposal: jax.Array, fire: jax.Array, active: jax.Array
               ) -> tuple[InternalEnvState, jax.Array]:
    """One raw step of the active episodes; the others are left unchanged.

    Args:
      proposal: [B, n_z] z̃, taken where `fire` (a new abstract action).
      fire: [B] bool, a decision is made at this step (counted; an episode
        out of decision slots is truncated instead of stepped).
      active: [B] bool, episodes that take this raw step.

    Returns:
      (state, reward [B]) with reward 0 for inactive episodes.
    """
    out_of_slots = active & fire & (state.decisions >= self.max_decisions)
    active = active & ~state.done & ~out_of_slots
    fire = fire & active
    module, iv = self.module.advance(params.module, state.module,
                                     state.residual, state.observation,
                                     proposal, fire)
    out = self.model.apply(params.base, state.residual[:, None], self.layer,
                           iv, state.cache, method=BaseModel.upper)
    keys = jax.vmap(jax.random.fold_in)(state.key, state.raw_steps)
    action, _ = acting.sample_head(out, keys, self.temperature)
    env, obs, reward, env_done, _ = self.raw_env.step(state.env, action)
    e, cache = self.lower(params, obs, out.cache)
    beta = self.module.switch(params.module, module, e, obs)
    reward = jnp.where(active, reward, 0.0)
    stepped = InternalEnvState(
        env=env, cache=cache, module=module, observation=obs, residual=e,
        switch_gate=beta,
        key=state.key, done=env_done, truncated=state.truncated,
        decisions=state.decisions + fire.astype(jnp.int32),
        raw_steps=state.raw_steps + 1,
        episode_return=state.episode_return + reward)
    new = common.select_where(active, stepped.replace(cache=None),
                              state.replace(cache=None))
    new = new.replace(cache=_mask_cache(cache, state.cache, active))
    new = new.replace(done=new.done | out_of_slots,
                      truncated=new.truncated | out_of_slots)
    return new, reward

  def step(self, params: InternalEnvParams, state: InternalEnvState,
           latent_code: jax.Array
           ) -> tuple[InternalEnvState, jax.Array, jax.Array, jax.Array, dict]:
    """One abstract step: applies z [B, n_z] until the gate fires again.

    Episodes already done are left as they are (reward 0). An episode that
    ends mid-way stops there: no raw step after `done`, its reward counted
    once.

    Returns:
      (state, e [B, n_e] where the gate fired (the last residual if done),
      reward [B] summed over the raw steps, done [B], info) with info
      'raw_steps' [B] the raw steps this abstract step took.
    """
    def cond(carry):
      _, active, _, _ = carry
      return jnp.any(active)

    def body(carry):
      state, active, first, reward = carry
      state, r = self.raw_step(params, state, latent_code, first & active,
                               active)
      active = active & ~state.done & (state.switch_gate
                                       < self.switch_threshold)
      return state, active, jnp.zeros_like(first), reward + r

    start = state.raw_steps
    active = ~state.done
    carry = (state, active, jnp.ones_like(active),
             jnp.zeros(active.shape, jnp.float32))
    state, _, _, reward = jax.lax.while_loop(cond, body, carry)
    return state, state.residual, reward, state.done, {
        'raw_steps': state.raw_steps - start}
