"""The training loop shared by the image and video projects: trainer, hooks, evaluation, optimizer, lr schedule.

Entry points: :func:`run` / :func:`train` / :func:`test` (one process's job), the hooks-based
:class:`ClassificationTrainer`. Data loading and the dataset registry are in :mod:`mvit.data`; processes (launch,
SLURM, the OUTPUT_DIR lock, preemption) in :mod:`mvit.runtime`.
"""

from .._moved import moved_attributes
from .evaluation import EvalResult, evaluate
from .hooks import EMA, Checkpointer, EvalHook, LRScheduler, MetricsWriter, ProgressBar
from .lr_schedule import LRSchedule, build_lr_schedule
from .optimizer import build_optimizer, no_weight_decay_names, param_groups
from .runner import checkpoint_dir, run, test, train
from .train_loop import HookBase, TrainerBase, TrainerStorage
from .trainer import ClassificationTrainer

__all__ = [
    "EMA",
    "Checkpointer",
    "ClassificationTrainer",
    "EvalHook",
    "EvalResult",
    "HookBase",
    "LRSchedule",
    "LRScheduler",
    "MetricsWriter",
    "ProgressBar",
    "TrainerBase",
    "TrainerStorage",
    "build_lr_schedule",
    "build_optimizer",
    "checkpoint_dir",
    "evaluate",
    "no_weight_decay_names",
    "param_groups",
    "run",
    "test",
    "train",
]

# What this package exported before data loading and processes moved out (issue 18), for one release.
__getattr__ = moved_attributes(
    __name__,
    {
        "EpochShardSampler": "mvit.data.loader",
        "SeededDataset": "mvit.data.loader",
        "build_loader": "mvit.data.loader",
        "collate_items": "mvit.data.loader",
        "build_dataset": "mvit.data.registry",
        "find_input_loader": "mvit.data.registry",
        "list_datasets": "mvit.data.registry",
        "register_dataset": "mvit.data.registry",
        "register_input_loader": "mvit.data.registry",
        "launch": "mvit.runtime.launch",
        "Preempted": "mvit.runtime.preemption",
        "install_signal_handlers": "mvit.runtime.preemption",
        "request_stop": "mvit.runtime.preemption",
        "stop_requested": "mvit.runtime.preemption",
        "UserError": "mvit.errors",
        "get_device": "mvit.utils.distributed",
    },
)
