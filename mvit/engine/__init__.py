"""Training and evaluation engine shared by the image and video projects.

Entry points: :func:`launch` (processes), :func:`run` / :func:`train` / :func:`test` (one process's job),
:func:`register_dataset` (projects plug in data), the hooks-based :class:`ClassificationTrainer`.
"""

from .data import EpochShardSampler, SeededDataset, build_loader, collate_items
from .evaluation import EvalResult, evaluate
from .hooks import EMA, Checkpointer, EvalHook, LRScheduler, MetricsWriter, ProgressBar
from .launch import UserError, get_device, launch
from .lr_schedule import LRSchedule, build_lr_schedule
from .optimizer import build_optimizer, no_weight_decay_names, param_groups
from .preemption import Preempted, install_signal_handlers, request_stop, stop_requested
from .registry import (
    build_dataset,
    find_input_loader,
    list_datasets,
    register_dataset,
    register_input_loader,
)
from .runner import checkpoint_dir, run, test, train
from .train_loop import HookBase, TrainerBase, TrainerStorage
from .trainer import ClassificationTrainer

__all__ = [
    "EMA",
    "Checkpointer",
    "ClassificationTrainer",
    "EpochShardSampler",
    "EvalHook",
    "EvalResult",
    "HookBase",
    "LRSchedule",
    "LRScheduler",
    "MetricsWriter",
    "Preempted",
    "ProgressBar",
    "SeededDataset",
    "TrainerBase",
    "TrainerStorage",
    "UserError",
    "build_dataset",
    "build_loader",
    "build_lr_schedule",
    "build_optimizer",
    "checkpoint_dir",
    "collate_items",
    "evaluate",
    "find_input_loader",
    "get_device",
    "install_signal_handlers",
    "launch",
    "list_datasets",
    "no_weight_decay_names",
    "param_groups",
    "register_dataset",
    "register_input_loader",
    "request_stop",
    "run",
    "stop_requested",
    "test",
    "train",
]
