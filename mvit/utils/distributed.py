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
    "wants_cuda",
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


def wants_cuda(cfg: Any) -> bool:
    """Whether the config asks for GPUs: ``NUM_GPUS > 0`` unless ``DEVICE`` is ``cpu`` (PySlowFast: NUM_GPUS 0 is the
    CPU)."""
    return cfg.NUM_GPUS > 0 and getattr(cfg, "DEVICE", "cuda") != "cpu"


def get_device(cfg: Any) -> torch.device:
    """``cuda:LOCAL_RANK`` when the config asks for GPUs (:func:`wants_cuda`), else the CPU.

    Raises:
        ConfigError: GPUs asked for but CUDA is not available (never a silent fallback to the CPU).
    """
    if not wants_cuda(cfg):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from ..errors import ConfigError
        from .devices import cuda_unavailable_reason

        raise ConfigError(
            f"NUM_GPUS {cfg.NUM_GPUS} asks for GPUs but CUDA is not available: {cuda_unavailable_reason()}; "
            "NUM_GPUS 0 trains on the CPU (DEVICE cpu: NUM_GPUS CPU processes)"
        )
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())


def is_main_process() -> bool:
    return get_rank() == 0


# Seconds a collective may wait for a peer before it fails: the config's DIST_TIMEOUT_S, or this environment
# variable (which overrides it, for commands whose config cannot be changed).
TIMEOUT_ENV = "MVIT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0
# NCCL's error handling, set before the group is created unless the user set it: 2 (CleanUpOnly) aborts the
# communicators after an error or a timeout and raises in the training thread (a lost peer, exit 69, requeue),
# where torch's default (3) kills the process from its watchdog thread.
NCCL_ERROR_HANDLING_ENV = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "2"}

# What gloo / the c10d store say when a peer process died or stopped answering.
_PEER_LOSS = re.compile(
    r"Connection closed by peer|Connection reset by peer|Broken pipe|Timed out waiting|Socket Timeout"
    r"|failed to recv|failed to send|ECONNRESET|EPIPE"
    # NCCL (ProcessGroupNCCL's texts): a peer gone, a timeout caught by the watchdog, a communicator aborted.
    r"|NCCL communicator was aborted|Watchdog caught collective operation timeout|timed out in blocking wait"
    r"|NCCL operation timed out|ncclRemoteError|ncclSystemError|remote process exiting prematurely"
)
# NCCL errors that are a bug of the caller, not a lost peer.
_NOT_PEER_LOSS = re.compile(r"ncclInvalidUsage|ncclInvalidArgument")


def collective_timeout_s(cfg: Any = None) -> float:
    """How long a collective waits for a slow or vanished peer: ``$MVIT_DIST_TIMEOUT`` seconds when set, else the
    config's ``DIST_TIMEOUT_S``, else 30 min.

    A peer that dies closes its sockets and its peers fail at once; the timeout bounds the wait for one that
    stops without closing them (a frozen machine, a network partition, a rank stuck in NCCL).
    """
    from ..errors import ConfigError

    value = os.environ.get(TIMEOUT_ENV, "")
    if not value:
        seconds = float(getattr(cfg, "DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)) if cfg is not None else DEFAULT_TIMEOUT_S
        if seconds <= 0:
            raise ConfigError(f"DIST_TIMEOUT_S {seconds:g}: expected a positive number of seconds")
        return seconds
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise ConfigError(f"{TIMEOUT_ENV}={value!r}: expected a positive number of seconds")
    return seconds


def init_process_group(
    backend: str,
    init_method: str,
    world_size: int,
    rank: int,
    timeout_s: float | None = None,
    device: torch.device | None = None,
) -> None:
    """Join (or create) the default process group.

    Args:
        backend: "gloo" or "nccl".
        init_method: "env://" (MASTER_ADDR / MASTER_PORT from the environment) or "tcp://host:port".
        timeout_s: how long rendezvous and each collective wait for peers (default :func:`collective_timeout_s`).
        device: this process's GPU, made current before the group exists and bound to it (``device_id``), so
            that NCCL never opens a context on another process's GPU.
    """
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        for key, value in NCCL_ERROR_HANDLING_ENV.items():
            os.environ.setdefault(key, value)
    if device is not None and device.type == "cuda":
        torch.cuda.set_device(device)
        kwargs["device_id"] = device
    dist.init_process_group(
        backend=backend,
        init_method=init_method,
        world_size=world_size,
        rank=rank,
        timeout=datetime.timedelta(seconds=collective_timeout_s() if timeout_s is None else timeout_s),
        **kwargs,
    )


def is_peer_loss(err: BaseException) -> bool:
    """Whether ``err`` (raised in a collective) means another process of the job died or stopped answering."""
    if isinstance(err, (dist.DistNetworkError, dist.DistStoreError)):
        return True
    text = str(err)
    if isinstance(err, dist.DistBackendError):  # NCCL failed in a collective (an aborted communicator, a timeout)
        return not _NOT_PEER_LOSS.search(text)
    return isinstance(err, RuntimeError) and bool(_PEER_LOSS.search(text))


def synchronize() -> None:
    """Barrier across all processes (no-op for one process); under NCCL on this process's own GPU."""
    if is_distributed():
        if dist.get_backend() == dist.Backend.NCCL:
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
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
