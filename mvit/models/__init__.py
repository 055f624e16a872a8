"""MViTv2 models: config, layers, attention, the model and its zoo."""

from .attention import MultiScaleAttention
from .block import MultiScaleBlock
from .build import build_model, config_from_cfg
from .config import BlockSpec, MViTConfig
from .mvit import MViT
from .rel_pos import decomposed_rel_pos_bias
from .zoo import ModelInfo, create_model, get_model_config, list_models, model_info, register_model

__all__ = [
    "BlockSpec",
    "MViT",
    "MViTConfig",
    "ModelInfo",
    "MultiScaleAttention",
    "MultiScaleBlock",
    "build_model",
    "config_from_cfg",
    "create_model",
    "decomposed_rel_pos_bias",
    "get_model_config",
    "list_models",
    "model_info",
    "register_model",
]
