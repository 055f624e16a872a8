"""Thin helpers over ``torch.distributed`` that also work when no process group exists (one process)."""

from __future__ import annotations

import datetime
import os
import re
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_object",
    "all_reduce_sum",
    "get_rank",
    "get_world_size",
    "collective_timeout_s",
    "get_device",
    "init_process_group",
    "is_distributed",
    "is_peer_loss",
    "is_main_process",
    "synchronize",
]


def is_distributed() -> bool:
    """True when a default process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_device(cfg: Any) -> torch.device:
    """``cuda:LOCAL_RANK`` when a GPU is available and ``cfg.NUM_GPUS > 0``, else the CPU."""
    if cfg.NUM_GPUS > 0 and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def is_main_process() -> bool:
    return get_rank() == 0


# Seconds a collective may wait for a peer before it fails (torch's default, 30 min, unless overridden).
TIMEOUT_ENV = "MVIT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0

# What gloo / the c10d store say when a peer process died or stopped answering.
_PEER_LOSS = re.compile(
    r"Connection closed by peer|Connection reset by peer|Broken pipe|Timed out waiting|Socket Timeout"
    r"|failed to recv|failed to send|ECONNRESET|EPIPE"
)


def collective_timeout_s() -> float:
    """How long a collective waits for a slow or vanished peer: ``$MVIT_DIST_TIMEOUT`` seconds, else 30 min.

    A peer that dies closes its sockets and its peers fail at once; the timeout bounds the wait for one that
    stops without closing them (a frozen machine, a network partition).
    """
    value = os.environ.get(TIMEOUT_ENV, "")
    if not value:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        from ..errors import ConfigError

        raise ConfigError(f"{TIMEOUT_ENV}={value!r}: expected a positive number of seconds")
    return seconds


def init_process_group(
    backend: str, init_method: str, world_size: int, rank: int, timeout_s: float | None = None
) -> None:
    """Join (or create) the default process group.

    Args:
        backend: "gloo" or "nccl".
        init_method: "env://" (MASTER_ADDR / MASTER_PORT from the environment) or "tcp://host:port".
        timeout_s: how long rendezvous and each collective wait for peers (default :func:`collective_timeout_s`).
    """
    dist.init_process_group(
        backend=backend,
        init_method=init_method,
        world_size=world_size,
        rank=rank,
        timeout=datetime.timedelta(seconds=collective_timeout_s() if timeout_s is None else timeout_s),
    )


def is_peer_loss(err: BaseException) -> bool:
    """Whether ``err`` (raised in a collective) means another process of the job died or stopped answering."""
    if isinstance(err, (dist.DistNetworkError, dist.DistStoreError)):
        return True
    return isinstance(err, RuntimeError) and bool(_PEER_LOSS.search(str(err)))


def synchronize() -> None:
    """Barrier across all processes (no-op for one process)."""
    if is_distributed():
        dist.barrier()


def _comm_device() -> torch.device:
    # nccl only moves CUDA tensors; gloo only CPU ones.
    if dist.get_backend() == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes; returns a new tensor on the input's device.

    Args:
        values: any shape; float64 is used for the reduction so that counts stay exact.
    """
    if not is_distributed():
        return values.clone()
    buf = values.detach().to(device=_comm_device(), dtype=torch.float64)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(device=values.device, dtype=values.dtype)


def all_gather_object(obj: Any) -> list[Any]:
    """Pickle-able object from every process, in rank order (``[obj]`` for one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out
