"""Critic-free PPO-clip (docs/method.md §7): pure loss functions.

One advantage per episode, A = (R − mean_batch R) / (std_batch R + ε) with
ε = 1e-3, applied to every decision of that episode (abstract decisions for
internal RL, raw actions for the raw-action baseline). No value function.

Where the paper is silent: the surrogate is averaged over all valid
decisions of the batch (a long episode weighs more than a short one, as in
standard token-level PPO); std is the population standard deviation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def episode_advantages(returns: jax.Array, eps: float = 1e-3) -> jax.Array:
  """returns [B] -> batch-normalised advantages [B]."""
  return (returns - returns.mean()) / (returns.std() + eps)


def ppo_clip_loss(log_prob: jax.Array, old_log_prob: jax.Array,
                  advantage: jax.Array, valid: jax.Array,
                  clip_eps: float = 0.2,
                  entropy: jax.Array | None = None,
                  entropy_coef: float = 0.0
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The clipped surrogate, negated (to minimise).

  Args:
    log_prob: [B, K] log π_new(action_k) of the decisions.
    old_log_prob: [B, K] log π_old(action_k) when they were taken.
    advantage: [B] per-episode advantage (broadcast over K) or [B, K].
    valid: [B, K] bool, real decisions.
    clip_eps: the clip range ε of the ratio.
    entropy: [B, K] policy entropy at each decision, or None.
    entropy_coef: weight of the entropy bonus (0 in the paper).

  Returns:
    (loss, metrics) with loss = −mean_valid min(r A, clip(r, 1±ε) A)
    − entropy_coef · mean_valid entropy.
  """
  if advantage.ndim == 1:
    advantage = advantage[:, None]
  mask = valid.astype(jnp.float32)
  count = jnp.maximum(mask.sum(), 1.0)
  mean = lambda x: (x * mask).sum() / count
  log_ratio = log_prob - old_log_prob
  ratio = jnp.exp(log_ratio)
  unclipped = ratio * advantage
  clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantage
  surrogate = mean(jnp.minimum(unclipped, clipped))
  loss = -surrogate
  metrics = {
      'policy_loss': loss,
      'clip_fraction': mean((jnp.abs(ratio - 1.0) > clip_eps
                             ).astype(jnp.float32)),
      # The k3 estimator of KL(π_old ‖ π_new) (low variance, >= 0).
      'approx_kl': mean((ratio - 1.0) - log_ratio),
  }
  if entropy is not None:
    ent = mean(entropy)
    loss = loss - entropy_coef * ent
    metrics['entropy'] = ent
  return loss, metrics
