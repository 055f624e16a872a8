"""The training loop shared by the image and video projects: trainer, hooks, evaluation, optimizer, lr schedule.

Entry points: :func:`run` / :func:`train` / :func:`test` (one process's job), the hooks-based
:class:`ClassificationTrainer`. Data loading and the dataset registry are in :mod:`mvit.data`; processes (launch,
SLURM, the OUTPUT_DIR lock, preemption) in :mod:`mvit.runtime`.
"""

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
