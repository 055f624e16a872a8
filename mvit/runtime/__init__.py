"""Processes and clusters: launch / spawn, the OUTPUT_DIR lock, cooperative preemption, the project loader, and the
SLURM submitter (:mod:`mvit.runtime.submit`, imported on its own: it needs submitit). Imports no training loop."""

from .launch import RANK_LOST_EXIT_CODE, launch
from .lock import OutputDirLock, OutputDirLocked, hold_until_exit, output_dir_lock, release_held
from .preemption import PREEMPTED_EXIT_CODE, Preempted, install_signal_handlers, request_stop, stop_requested
from .projects import load_projects

__all__ = [
    "PREEMPTED_EXIT_CODE",
    "RANK_LOST_EXIT_CODE",
    "OutputDirLock",
    "OutputDirLocked",
    "Preempted",
    "hold_until_exit",
    "install_signal_handlers",
    "launch",
    "load_projects",
    "output_dir_lock",
    "release_held",
    "request_stop",
    "stop_requested",
]
