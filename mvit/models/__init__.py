"""MViTv2 models: config, layers, attention, the model, its zoo, and ``create_model`` (the one builder)."""

from .attention import MultiScaleAttention
from .block import MultiScaleBlock
from .build import create_model, resolve_config
from .config import BlockSpec, MViTConfig
from .mvit import MViT
from .rel_pos import decomposed_rel_pos_bias
from .zoo import ModelInfo, list_models, model_info, register_model

__all__ = [
    "BlockSpec",
    "MViT",
    "MViTConfig",
    "ModelInfo",
    "MultiScaleAttention",
    "MultiScaleBlock",
    "create_model",
    "decomposed_rel_pos_bias",
    "list_models",
    "model_info",
    "register_model",
    "resolve_config",
]
