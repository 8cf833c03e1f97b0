"""Pure loss functions of the base model (docs/method.md §4).

Per step: −ln p(a_t | o_{1:t}) − λ·ln p(o_{t+1} | o_{1:t}), averaged over the
valid steps of the batch. Discrete actions are categorical; continuous actions
a diagonal Gaussian. The next observation is a product of Bernoullis over the
one-hot values (gridworld) or a unit-variance Gaussian (continuous
observations, i.e. MSE up to constants).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from irl.models import ModelOutput

OBS_LIKELIHOODS = ('bernoulli', 'gaussian')


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of x over the True entries of mask (0 if there are none)."""
  mask = mask.astype(x.dtype)
  return (x * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def action_nll(out: ModelOutput, actions: jax.Array) -> jax.Array:
  """[B, T] −ln p(a_t | o_{1:t}) under the model's action head."""
  if out.action_logits is not None:
    logp = jax.nn.log_softmax(out.action_logits)
    return -jnp.take_along_axis(logp, actions[..., None].astype(jnp.int32),
                                axis=-1)[..., 0]
  var = jnp.exp(2 * out.action_log_std)
  nll = 0.5 * ((actions - out.action_mean) ** 2 / var + jnp.log(2 * jnp.pi)
               ) + out.action_log_std
  return nll.sum(-1)


def action_fit(out: ModelOutput, actions: jax.Array, valid: jax.Array
               ) -> dict[str, jax.Array]:
  """How well the head's mode matches the actions, over valid steps:
  {'action_acc'} (discrete: argmax hits) or {'action_mse'} (continuous:
  squared error of the mean, averaged over action dimensions)."""
  if out.action_logits is not None:
    correct = jnp.argmax(out.action_logits, -1) == actions
    return {'action_acc': masked_mean(correct.astype(jnp.float32), valid)}
  return {'action_mse': masked_mean(
      ((out.action_mean - actions) ** 2).mean(-1), valid)}


def obs_nll(obs_pred: jax.Array, next_obs: jax.Array,
            likelihood: str = 'bernoulli') -> jax.Array:
  """[B, T] −ln p(o_{t+1} | o_{1:t}), summed over observation dimensions."""
  if likelihood == 'bernoulli':
    return optax.sigmoid_binary_cross_entropy(obs_pred, next_obs).sum(-1)
  if likelihood == 'gaussian':
    return 0.5 * ((obs_pred - next_obs) ** 2 + jnp.log(2 * jnp.pi)).sum(-1)
  raise ValueError(f'obs likelihood {likelihood!r} is not one of '
                   f'{OBS_LIKELIHOODS}')


def future_action_nll(out: ModelOutput, actions: jax.Array, valid: jax.Array
                      ) -> jax.Array:
  """[] mean over k = 1..K of −ln p_k(a_{t+k} | o_{1:t}), valid t and t + k.

  The auxiliary heads (`ModelConfig.future_actions` = K, not in the paper,
  off in every preset) predict the expert's next K actions. Right after a
  subgoal is reached the next action alone says little about which subgoal
  comes next (several targets share a first move); the next K actions say
  more. Measured on the cpu preset (docs/results.md), K = 8 did not speed up learning
  the task structure.
  """
  logits = out.future_logits
  num_future = logits.shape[-2]
  logp = jax.nn.log_softmax(logits)
  per_k = []
  for k in range(1, num_future + 1):
    target = actions[:, k:].astype(jnp.int32)
    nll = -jnp.take_along_axis(logp[:, :-k, k - 1], target[..., None],
                               axis=-1)[..., 0]
    per_k.append(masked_mean(nll, valid[:, k:] & valid[:, :-k]))
  return jnp.mean(jnp.stack(per_k))


def pretrain_loss(out: ModelOutput, actions: jax.Array, next_obs: jax.Array,
                  valid: jax.Array, obs_weight: float,
                  likelihood: str = 'bernoulli', future_weight: float = 0.0
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The base-model loss and its parts; every term is a mean over valid steps.

  With auxiliary future-action heads (out.future_logits not None) the loss
  adds `future_weight` · `future_action_nll`.
  """
  a_nll = masked_mean(action_nll(out, actions), valid)
  metrics = {'action_nll': a_nll}
  loss = a_nll
  if obs_weight:  # λ = 0 leaves the observation head out of the compiled step
    o_nll = masked_mean(obs_nll(out.obs_pred, next_obs.astype(jnp.float32),
                                likelihood), valid)
    metrics['obs_nll'] = o_nll
    loss = loss + obs_weight * o_nll
  metrics.update(action_fit(out, actions, valid))
  if out.future_logits is not None:
    f_nll = future_action_nll(out, actions, valid)
    metrics['future_action_nll'] = f_nll
    loss = loss + future_weight * f_nll
  metrics['loss'] = loss
  return loss, metrics
