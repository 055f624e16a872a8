"""MViTv2 core library: one model for images and video, configs, checkpoints and the training engine."""

from .api import create_model, resolve_config
from .inference import predict
from .models import MViT, MViTConfig, list_models

__version__ = "0.1.0"
__all__ = ["MViT", "MViTConfig", "create_model", "list_models", "predict", "resolve_config"]
