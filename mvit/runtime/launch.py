"""Start a job on one or many processes (PySlowFast semantics, plus torchrun / submitit environments).

- ``RANK`` and ``WORLD_SIZE`` in the environment (torchrun; submitit tasks that export them): this process
  joins the ``env://`` process group itself and runs the job;
- else ``NUM_GPUS * NUM_SHARDS > 1``: ``NUM_GPUS`` processes are spawned on this machine, process ``i`` being
  rank ``SHARD_ID * NUM_GPUS + i`` of ``NUM_GPUS * NUM_SHARDS``, rendezvous at ``INIT_METHOD``;
- else the job runs in this process.

The backend is ``DIST_BACKEND`` (nccl) on GPUs and gloo on the CPU. ``NUM_GPUS > 0`` asks for GPUs: each process
uses ``cuda:LOCAL_RANK``, made current before the process group exists. Before any process starts, a job that
cannot have its GPUs (CUDA unavailable, more processes than GPUs visible, a GPU the installed torch has no kernels
for) stops with one line, exit 2; ``NUM_GPUS 0`` runs on the CPU, and ``DEVICE cpu`` runs ``NUM_GPUS`` CPU
processes (gloo).

A lost process: when a spawned process dies (e.g. SIGKILL by the OOM killer) the others fail in their next
collective (a dead peer's sockets close; one that stops answering is given up after ``$MVIT_DIST_TIMEOUT``
seconds, else ``DIST_TIMEOUT_S``, see :func:`mvit.utils.distributed.collective_timeout_s`; under NCCL the
watchdog aborts the communicators after that time and the survivors raise). The launching process then stops whatever
still runs, prints one line naming the lost rank and the checkpoint a rerun resumes from, and exits with
:data:`RANK_LOST_EXIT_CODE`. On the machines of a multi-machine job that lost only a peer elsewhere, the line
names the ranks that ran on the other machines.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing.connection
import os
import signal
import sys
import time
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fvcore.common.config import CfgNode

from ..checkpoint.safe_io import load_pickle
from ..checkpoint.state import checkpoint_dir, find_resume_checkpoint
from ..errors import ConfigError, UserError, report
from ..utils.devices import available_cpus, check_cuda
from ..utils.distributed import (
    collective_timeout_s,
    get_device,
    init_process_group,
    is_distributed,
    is_peer_loss,
    wants_cuda,
)
from . import preemption

__all__ = ["RANK_LOST_EXIT_CODE", "check_devices", "launch"]

logger = logging.getLogger(__name__)

# EX_UNAVAILABLE from sysexits.h: a process of the job died or became unreachable; the job stopped and the
# same command resumes it. Also the exit code of a spawned process whose collective lost its peer.
RANK_LOST_EXIT_CODE = 69
# Seconds the survivors of a lost process get to fail on their own before they are killed.
SURVIVOR_GRACE_S = 10.0


def _backend(cfg: CfgNode) -> str:
    return cfg.DIST_BACKEND if wants_cuda(cfg) else "gloo"


def check_devices(cfg: CfgNode, processes: Optional[int] = None) -> None:
    """One line (:class:`~mvit.errors.ConfigError`) when this machine cannot give the job what it asks for.

    Args:
        processes: processes on this machine (default ``NUM_GPUS``; under torchrun / SLURM ``LOCAL_WORLD_SIZE``).
    """
    device = getattr(cfg, "DEVICE", "cuda")
    if device not in ("cuda", "cpu"):
        raise ConfigError(f"DEVICE {device!r}: expected cuda or cpu")
    if not wants_cuda(cfg):
        return
    check_cuda(
        cfg.NUM_GPUS if processes is None else processes,
        f"NUM_GPUS {cfg.NUM_GPUS}",
        "NUM_GPUS 0 trains on the CPU (DEVICE cpu: NUM_GPUS CPU processes)",
    )


def _run(cfg: CfgNode, func: Callable[..., Any], args: Sequence[Any], stop_signals: Sequence[int]) -> Any:
    if stop_signals:
        preemption.install_signal_handlers(stop_signals)
    if cfg.CPU_THREADS > 0:
        torch.set_num_threads(cfg.CPU_THREADS)
    elif int(os.environ.get("LOCAL_WORLD_SIZE", 1)) > 1:
        # Processes sharing a machine would otherwise each start one thread per core (oversubscription).
        torch.set_num_threads(max(1, available_cpus() // int(os.environ["LOCAL_WORLD_SIZE"])))
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
    try:
        # The GPU is made current before the group exists: NCCL then never opens a context on GPU 0 for every rank.
        init_process_group(
            _backend(cfg), cfg.INIT_METHOD, world_size, rank, collective_timeout_s(cfg), device=get_device(cfg)
        )
        _run(cfg, func, args, stop_signals)
    except preemption.Preempted:
        sys.exit(preemption.PREEMPTED_EXIT_CODE)
    except UserError as err:
        if rank == 0:
            print(f"error: {report(err)}", file=sys.stderr, flush=True)
        sys.exit(2)
    except Exception as err:
        if not (is_distributed() and is_peer_loss(err)):
            raise
        # The launching process names the lost rank; this one only records what its collective saw.
        logger.error("rank %d lost contact with a peer: %s", rank, report(err))
        sys.exit(RANK_LOST_EXIT_CODE)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _ranks(first: int, count: int) -> str:
    return f"rank {first}" if count == 1 else f"ranks {first}-{first + count - 1}"


def _resume_point(cfg: CfgNode) -> str:
    """Where a rerun of the same command continues, for the message about a lost process."""
    try:
        found = find_resume_checkpoint(checkpoint_dir(cfg))
    except Exception as err:  # noqa: BLE001 - only a message is at stake
        return f"rerun the same command to resume (checkpoints unreadable: {report(err)})"
    if found is None:
        return f"no checkpoint in {checkpoint_dir(cfg)} yet: rerunning the same command starts from the beginning"
    path, state = found
    return (
        f"rerun the same command to resume from the last complete checkpoint {path} "
        f"(epoch {state['epoch']}, iteration {state['iter']})"
    )


def _raise_crash(context: mp.ProcessContext, failures: dict[int, int]) -> None:
    """Re-raise a spawned process's exception with its traceback, as ``ProcessContext.join`` does; returns when
    every failure is a lost peer."""
    for i, code in sorted(failures.items()):
        if code in (RANK_LOST_EXIT_CODE, preemption.PREEMPTED_EXIT_CODE):
            continue
        pid = context.processes[i].pid
        if os.access(context.error_files[i], os.R_OK):
            with open(context.error_files[i], "rb") as fh:
                # Written by torch's spawn wrapper in the child: a str, which the restricted unpickler admits.
                trace = load_pickle(fh, context.error_files[i])
            raise mp.ProcessRaisedException(f"\n\n-- Process {i} terminated with the following error:\n{trace}", i, pid)
        raise mp.ProcessExitedException(
            f"process {i} terminated with exit code {code}", error_index=i, error_pid=pid, exit_code=code
        )


def _watch(context: mp.ProcessContext, cfg: CfgNode) -> None:
    """Wait for the spawned processes; when one fails, stop the others and exit with a one-line report.

    Raises:
        SystemExit: 2 (a user error, already printed), 75 (preempted) or :data:`RANK_LOST_EXIT_CODE` (a process
            died or a peer on another machine was lost).
        ProcessRaisedException: a process raised an exception (its traceback in the message).
    """
    procs = context.processes
    pending = {proc.sentinel: i for i, proc in enumerate(procs)}
    failed = False
    while pending and not failed:
        for sentinel in multiprocessing.connection.wait(list(pending)):
            proc = procs[pending.pop(sentinel)]
            proc.join()
            # A preempted process exits 75 while the others finish their checkpoint: not a failure.
            failed = failed or proc.exitcode not in (0, preemption.PREEMPTED_EXIT_CODE)
    if not failed:
        if any(proc.exitcode == preemption.PREEMPTED_EXIT_CODE for proc in procs):
            raise SystemExit(preemption.PREEMPTED_EXIT_CODE)
        return
    # Survivors normally fail at once in their next collective; a stuck one must not hold the job.
    deadline = time.monotonic() + min(SURVIVOR_GRACE_S, collective_timeout_s(cfg))
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    killed_here = set()
    for i, proc in enumerate(procs):
        if proc.is_alive():
            proc.kill()
            proc.join()
            killed_here.add(i)
    codes = {i: proc.exitcode for i, proc in enumerate(procs) if i not in killed_here}
    if 2 in codes.values():
        raise SystemExit(2)
    failures = {i: c for i, c in codes.items() if c != 0}
    if failures and all(c == preemption.PREEMPTED_EXIT_CODE for c in failures.values()):
        raise SystemExit(preemption.PREEMPTED_EXIT_CODE)
    first_rank = cfg.SHARD_ID * cfg.NUM_GPUS
    lost = []
    for i, code in sorted(failures.items()):
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else "unknown"
            lost.append(f"rank {first_rank + i} (pid {procs[i].pid}) was killed by signal {-code} ({name})")
    if not lost:
        _raise_crash(context, failures)  # returns when every failure is a lost peer
        # Then the process that went away ran on another machine.
        world = cfg.NUM_GPUS * cfg.NUM_SHARDS
        others = [
            _ranks(shard * cfg.NUM_GPUS, cfg.NUM_GPUS) + f" on machine {shard}"
            for shard in range(cfg.NUM_SHARDS)
            if shard != cfg.SHARD_ID
        ]
        lost.append(
            f"machine {cfg.SHARD_ID} ({_ranks(first_rank, cfg.NUM_GPUS)} of {world}) lost contact with "
            f"{' or '.join(others) or 'a peer'}"
        )
    print(f"error: {'; '.join(lost)}; the job stopped; {_resume_point(cfg)}", file=sys.stderr, flush=True)
    raise SystemExit(RANK_LOST_EXIT_CODE)


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
        stop_signals: signals turned into a preemption request (:mod:`mvit.runtime.preemption`) in the
            processes that train; with spawned processes the parent forwards them to its children.

    Returns:
        ``func``'s result when it ran in this process, else ``None``.

    Raises:
        Preempted: training stopped on a signal (in-process); with spawned processes a
            ``SystemExit(PREEMPTED_EXIT_CODE)``.
        SystemExit(2): a spawned process failed with a user error (already printed as one line).
        SystemExit(RANK_LOST_EXIT_CODE): a process of the job died or a peer became unreachable (one line
            printed: which rank, and the checkpoint the same command resumes from).
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        check_devices(cfg, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        try:
            if world_size > 1 and not dist.is_initialized():
                init_process_group(
                    _backend(cfg), "env://", world_size, rank, collective_timeout_s(cfg), device=get_device(cfg)
                )
            return _run(cfg, func, args, stop_signals)
        except Exception as err:
            if not (is_distributed() and is_peer_loss(err)):
                raise
            print(f"error: rank {rank} lost contact with a peer: {report(err)}", file=sys.stderr, flush=True)
            raise SystemExit(RANK_LOST_EXIT_CODE) from None
        finally:
            if world_size > 1 and dist.is_initialized():
                dist.destroy_process_group()
    check_devices(cfg)  # in this process, before any other starts: one line, exit 2
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
            _watch(context, cfg)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return None
    return _run(cfg, func, args, stop_signals)
