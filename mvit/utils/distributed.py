"""Thin helpers over ``torch.distributed`` that also work when no process group exists (one process)."""

from __future__ import annotations

import datetime
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_object",
    "all_reduce_sum",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "is_distributed",
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


def is_main_process() -> bool:
    return get_rank() == 0


def init_process_group(backend: str, init_method: str, world_size: int, rank: int, timeout_min: float = 30.0) -> None:
    """Join (or create) the default process group.

    Args:
        backend: "gloo" or "nccl".
        init_method: "env://" (MASTER_ADDR / MASTER_PORT from the environment) or "tcp://host:port".
    """
    dist.init_process_group(
        backend=backend,
        init_method=init_method,
        world_size=world_size,
        rank=rank,
        timeout=datetime.timedelta(minutes=timeout_min),
    )


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
