"""Checkpoints: training states written by the engine (``state``) and weight loading (core)."""

from .formats import (
    LoadReport,
    convert_state_dict,
    detect_format,
    load_checkpoint,
    read_checkpoint,
    save_state,
    save_weights,
    unwrap_state_dict,
)
from .pretrained import load_pretrained
from .state import (
    CheckpointError,
    atomic_save,
    find_resume_checkpoint,
    is_training_state,
    list_checkpoints,
    load_training_state,
)

__all__ = [
    "LoadReport",
    "convert_state_dict",
    "detect_format",
    "load_checkpoint",
    "load_pretrained",
    "read_checkpoint",
    "save_state",
    "save_weights",
    "unwrap_state_dict",
    "CheckpointError",
    "atomic_save",
    "find_resume_checkpoint",
    "is_training_state",
    "list_checkpoints",
    "load_training_state",
]
