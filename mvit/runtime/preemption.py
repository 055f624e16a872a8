"""Cooperative preemption: a stop request becomes a checkpoint at the next iteration boundary, then :class:`Preempted`.

A signal handler (or any code, e.g. the SLURM launcher) calls :func:`request_stop`. After each optimizer step
the trainer calls :func:`sync_stop_requested`, which all-reduces the flag so that every rank agrees on the same
iteration; the trainer then writes an atomic checkpoint holding the epoch and the iteration within it, and
raises :class:`Preempted`. Whoever catches it (``tools/run_net.py`` exits with :data:`PREEMPTED_EXIT_CODE`;
a SLURM job requeues itself) restarts the same command, which auto-resumes from that checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Iterable, Optional

import torch
import torch.distributed as dist

from ..utils.distributed import is_distributed

__all__ = [
    "PREEMPTED_EXIT_CODE",
    "Preempted",
    "clear_stop_request",
    "install_signal_handlers",
    "request_stop",
    "stop_requested",
    "sync_stop_requested",
]

logger = logging.getLogger(__name__)

# EX_TEMPFAIL from sysexits.h: "try again later", i.e. resume by running the same command.
PREEMPTED_EXIT_CODE = 75

_STOP = threading.Event()
_REASON: list[str] = []


class Preempted(Exception):
    """Raised by the trainer after it saved a checkpoint in response to a stop request.

    Attributes:
        checkpoint: path of the checkpoint written (``None`` on ranks that do not write).
        epoch, iteration: where training stopped (iterations completed within ``epoch``).
    """

    def __init__(self, checkpoint: Optional[str], epoch: int, iteration: int, reason: str = "") -> None:
        super().__init__(
            f"training stopped at epoch {epoch} iteration {iteration} ({reason or 'stop requested'}); "
            f"checkpoint: {checkpoint}"
        )
        self.checkpoint, self.epoch, self.iteration, self.reason = checkpoint, epoch, iteration, reason


def request_stop(reason: str = "stop requested") -> None:
    """Ask the trainer to checkpoint and stop at the next iteration boundary (safe in a signal handler)."""
    _REASON.append(reason)
    _STOP.set()


def stop_requested() -> bool:
    """Whether this process received a stop request (local view; see :func:`sync_stop_requested`)."""
    return _STOP.is_set()


def stop_reason() -> str:
    return _REASON[-1] if _REASON else ""


def clear_stop_request() -> None:
    _STOP.clear()
    _REASON.clear()


def sync_stop_requested(device: torch.device | str = "cpu") -> bool:
    """True on every rank when any rank received a stop request (a collective: call it on all ranks)."""
    flag = stop_requested()
    if not is_distributed():
        return flag
    buf = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return bool(buf.item() > 0)


def install_signal_handlers(signals: Iterable[int | signal.Signals] = (signal.SIGTERM, signal.SIGUSR1)) -> None:
    """Turn each of ``signals`` into :func:`request_stop` (main thread only, as Python requires).

    A second signal while a stop is pending gets the signal's default action (e.g. terminate) at once.
    """

    def _handler(signum: int, _frame: object) -> None:
        if stop_requested():  # a second signal: the default action (usually terminate) at once
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        request_stop(f"received {signal.Signals(signum).name}")

    for sig in signals:
        signal.signal(sig, _handler)
    logger.debug("stop requested on signals %s", [signal.Signals(s).name for s in signals])
