"""MViTv2 core library: one model for images and video, configs, checkpoints and the training engine."""

from .models import MViT, MViTConfig, create_model, list_models, resolve_config

__version__ = "0.1.0"
__all__ = ["MViT", "MViTConfig", "create_model", "list_models", "resolve_config"]
