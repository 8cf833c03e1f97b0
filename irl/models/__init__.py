"""Base models: causal Transformer and Hawk backbones, editable residuals."""
from irl.models.base_model import (BaseModel, Cache, LayerCache, ModelOutput,
                                   init_cache, reset_cache)
from irl.models.common import KERNEL_INIT, MLP
from irl.models.config import ModelConfig
from irl.models.controller import ControllerDecoder
from irl.models.hawk import (RGLRU, Conv1D, HawkBlock, RecurrentBlock,
                             RecurrentCache, init_recurrent_cache)
from irl.models.intervention import Intervention
from irl.models.transformer import (AttentionCache, RelativeAttention,
                                    TransformerBlock,
                                    causal_relative_position_bucket,
                                    init_attention_cache)

__all__ = [
    'AttentionCache', 'BaseModel', 'Cache', 'Conv1D', 'ControllerDecoder', 'HawkBlock',
    'Intervention', 'KERNEL_INIT', 'LayerCache', 'MLP', 'ModelConfig',
    'ModelOutput', 'RGLRU', 'RecurrentBlock', 'RecurrentCache',
    'RelativeAttention', 'TransformerBlock', 'causal_relative_position_bucket',
    'init_attention_cache', 'init_cache', 'init_recurrent_cache',
    'reset_cache',
]
