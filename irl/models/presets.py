"""Base-model config presets shared by the environments (docs/method.md §4).

`transformer(preset)`: the gridworld model; `hawk(preset)`: the ant model
(RG-LRU blocks of the Griffin paper), ready for the ant environment.
"""

import ml_collections


def _model(backbone, num_layers, width, num_heads, mlp_dim):
  m = ml_collections.ConfigDict()
  m.backbone = backbone
  m.num_layers = num_layers      # L
  m.width = width                # n_e
  m.num_heads = num_heads
  m.mlp_dim = mlp_dim            # ReLU MLP hidden width
  m.num_buckets = 32             # T5 relative-position buckets (transformer)
  m.max_distance = 128
  # > 0: each step attends to the last W steps only (transformer); 0: all.
  m.attention_window = 0
  # The blocks (0-based) that have the window; (): every block.
  m.attention_window_blocks = ()
  m.conv_width = 4               # temporal Conv1D (hawk)
  m.max_len = 128                # KV cache slots >= env.max_steps (transformer)
  m.dtype = 'float32'            # 'bfloat16' for mixed precision
  m.obs_encoder = 'linear'       # or 'egocentric_grid' (gridworld only)
  m.future_actions = 0           # auxiliary heads for a_{t+1..t+K} (0: paper)
  return m


def transformer(preset: str) -> ml_collections.ConfigDict:
  return {
      'paper': lambda: _model('transformer', 6, 256, 4, 512),
      'cpu': lambda: _model('transformer', 4, 128, 4, 256),
      'test': lambda: _model('transformer', 2, 32, 2, 64),
  }[preset]()


def hawk(preset: str) -> ml_collections.ConfigDict:
  m = {
      'paper': lambda: _model('hawk', 8, 256, 8, 512),
      'cpu': lambda: _model('hawk', 4, 128, 8, 256),
      'test': lambda: _model('hawk', 2, 32, 2, 64),
  }[preset]()
  m.max_len = 512                # ant episodes: T = 500 control steps
  return m
