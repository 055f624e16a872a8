"""Start a job on one or many processes (PySlowFast semantics, plus torchrun / submitit environments).

- ``RANK`` and ``WORLD_SIZE`` in the environment (torchrun; submitit tasks that export them): this process
  joins the ``env://`` process group itself and runs the job;
- else ``NUM_GPUS * NUM_SHARDS > 1``: ``NUM_GPUS`` processes are spawned on this machine, process ``i`` being
  rank ``SHARD_ID * NUM_GPUS + i`` of ``NUM_GPUS * NUM_SHARDS``, rendezvous at ``INIT_METHOD``;
- else the job runs in this process.

The backend is ``DIST_BACKEND`` (nccl) on GPUs and gloo on the CPU (a CPU-only machine runs ``NUM_GPUS``
CPU processes). Each process uses ``cuda:LOCAL_RANK`` when a GPU is present and ``NUM_GPUS > 0``.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fvcore.common.config import CfgNode

from ..errors import UserError, report
from ..utils.distributed import init_process_group
from . import preemption

__all__ = ["UserError", "get_device", "launch"]

logger = logging.getLogger(__name__)


def get_device(cfg: CfgNode) -> torch.device:
    """``cuda:LOCAL_RANK`` when a GPU is available and ``NUM_GPUS > 0``, else the CPU."""
    if cfg.NUM_GPUS > 0 and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def _backend(cfg: CfgNode) -> str:
    return cfg.DIST_BACKEND if get_device(cfg).type == "cuda" else "gloo"


def _run(cfg: CfgNode, func: Callable[..., Any], args: Sequence[Any], stop_signals: Sequence[int]) -> Any:
    if stop_signals:
        preemption.install_signal_handlers(stop_signals)
    if cfg.CPU_THREADS > 0:
        torch.set_num_threads(cfg.CPU_THREADS)
    elif int(os.environ.get("LOCAL_WORLD_SIZE", 1)) > 1:
        # Processes sharing a machine would otherwise each start one thread per core (oversubscription).
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["LOCAL_WORLD_SIZE"])))
    device = get_device(cfg)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return func(cfg, *args)


def _spawned(
    local_rank: int,
    cfg: CfgNode,
    func: Callable[..., Any],
    args: Sequence[Any],
    modules: Sequence[str],
    stop_signals: Sequence[int],
) -> None:
    for name in modules:  # registries (datasets, loaders) live in modules the child has not imported yet
        importlib.import_module(name)
    world_size = cfg.NUM_GPUS * cfg.NUM_SHARDS
    rank = cfg.SHARD_ID * cfg.NUM_GPUS + local_rank
    os.environ.update(
        LOCAL_RANK=str(local_rank), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(cfg.NUM_GPUS)
    )
    init_process_group(_backend(cfg), cfg.INIT_METHOD, world_size, rank)
    try:
        _run(cfg, func, args, stop_signals)
    except preemption.Preempted:
        sys.exit(preemption.PREEMPTED_EXIT_CODE)
    except UserError as err:
        if rank == 0:
            print(f"error: {report(err)}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(
    cfg: CfgNode,
    func: Callable[..., Any],
    args: Sequence[Any] = (),
    *,
    modules: Sequence[str] = (),
    stop_signals: Sequence[int] = (),
) -> Optional[Any]:
    """Run ``func(cfg, *args)`` on every process of the job (see the module docstring for how).

    Args:
        func: a module-level function (it is pickled by reference when processes are spawned).
        modules: modules each spawned process imports first (projects that register datasets).
        stop_signals: signals turned into a preemption request (:mod:`mvit.engine.preemption`) in the
            processes that train; with spawned processes the parent forwards them to its children.

    Returns:
        ``func``'s result when it ran in this process, else ``None``.

    Raises:
        Preempted: training stopped on a signal (in-process); with spawned processes a
            ``SystemExit(PREEMPTED_EXIT_CODE)``.
        SystemExit(2): a spawned process failed with a user error (already printed as one line).
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        if world_size > 1 and not dist.is_initialized():
            init_process_group(_backend(cfg), "env://", world_size, rank)
        try:
            return _run(cfg, func, args, stop_signals)
        finally:
            if world_size > 1 and dist.is_initialized():
                dist.destroy_process_group()
    if cfg.NUM_GPUS * cfg.NUM_SHARDS > 1:
        context = mp.start_processes(
            _spawned,
            args=(cfg, func, tuple(args), tuple(modules), tuple(stop_signals)),
            nprocs=cfg.NUM_GPUS,
            join=False,
            start_method="spawn",
        )
        previous = {}

        def _forward(signum: int, _frame: object) -> None:
            for proc in context.processes:
                if proc.is_alive():
                    os.kill(proc.pid, signum)

        for sig in stop_signals:
            previous[sig] = signal.signal(sig, _forward)
        try:
            while not context.join(grace_period=30):
                pass
        except mp.ProcessExitedException as err:
            if err.exit_code in (preemption.PREEMPTED_EXIT_CODE, 2):
                raise SystemExit(err.exit_code) from None
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return None
    return _run(cfg, func, args, stop_signals)
