"""MViTv2 models: config, layers, attention, the model, its zoo and the weights registry (as data).

The builder from a name, a yaml file or a checkpoint is :func:`mvit.create_model` (:mod:`mvit.api`)."""

from .attention import MultiScaleAttention
from .block import MultiScaleBlock
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
    "decomposed_rel_pos_bias",
    "list_models",
    "model_info",
    "register_model",
]
