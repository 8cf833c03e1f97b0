"""Analytic matmul FLOPs of a base-model training step, for the model FLOP
utilisation that benchmarks/model_throughput.py and benchmarks/scaling.py
report: tokens × [6 (L P_block + P_heads) + 4 P_enc + 12 L S W]; biases,
norms, softmax, the RG-LRU scan and the optimiser are not counted."""

from __future__ import annotations

from irl.models.config import ModelConfig


def encoder_input_dim(cfg: ModelConfig) -> int:
  """Multiply-adds per token and output unit of the observation encoder."""
  if cfg.obs_encoder == 'egocentric_grid':
    # encoders.egocentric_dense: one kernel row per object channel.
    return cfg.obs_dim // cfg.grid_size**2 - 1
  return cfg.obs_dim


def block_matmul_params(cfg: ModelConfig) -> int:
  w, f = cfg.width, cfg.mlp_dim
  if cfg.backbone == 'transformer':
    return 4 * w * w + 2 * w * f
  return 3 * w * w + 2 * w * w // cfg.num_heads + 2 * w * f


def train_flops(cfg: ModelConfig, batch: int, seq_len: int,
                obs_head: bool = True) -> float:
  """Analytic matmul FLOPs of one training step (benchmarks/model_throughput.py
  explains the count); obs_head=False where λ = 0 leaves the observation
  head out of the step."""
  w = cfg.width
  outputs = (cfg.num_actions if cfg.action_type == 'discrete'
             else 2 * cfg.action_dim)
  heads = w * (outputs + (cfg.obs_dim if obs_head else 0))
  enc = encoder_input_dim(cfg) * w
  attention = (12 * cfg.num_layers * seq_len * w
               if cfg.backbone == 'transformer' else 0)
  per_token = (6 * (cfg.num_layers * block_matmul_params(cfg) + heads)
               + 4 * enc + attention)
  return float(per_token * batch * seq_len)
