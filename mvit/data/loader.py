"""Deterministic, resumable, sharded data loading.

The order of an epoch is a pure function of ``(seed, epoch)`` and every item is augmented under generators
seeded by ``(seed, epoch, index)``. So the batch at a given iteration never depends on the process's history:
a run resumed in the middle of an epoch (the sampler skips what was consumed) sees exactly the batches an
uninterrupted run sees, with any number of workers, persistent or not.
"""

from __future__ import annotations

import atexit
import logging
import math
import multiprocessing
import re
import signal
from typing import Any, Iterator, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import UserError
from ..utils.devices import available_cpus
from ..utils.rng import derive_seed, forked_rng

logger = logging.getLogger(__name__)

__all__ = [
    "EpochShardSampler",
    "LoaderWorkerError",
    "SeededDataset",
    "build_loader",
    "collate_items",
    "describe_worker_failure",
    "loader_workers",
    "shutdown_loader",
]


class EpochShardSampler(Sampler[tuple[int, int]]):
    """One rank's share of a dataset, yielding ``(epoch, index)`` keys for :class:`SeededDataset`.

    torch's ``DistributedSampler`` shards alike but can neither skip the items consumed before a resume nor
    pass the epoch on to the dataset, hence this one.

    Args:
        size: number of items in the dataset.
        shuffle: permute with a generator seeded by ``(seed, epoch)``; otherwise keep the dataset order.
        seed: experiment seed.
        rank, world_size: this process's shard is ``order[rank::world_size]``.
        pad: repeat items so that every rank gets the same count (training: equal iteration counts for DDP).
            Without padding (evaluation) every item is seen exactly once over all ranks.
    """

    def __init__(
        self, size: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1, pad: bool = True
    ) -> None:
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch and skip the first ``start`` items of this rank's shard (already consumed)."""
        self.epoch, self.start = epoch, start

    def shard(self) -> list[int]:
        """Dataset indices of this rank for the current epoch, before skipping."""
        if self.shuffle:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=gen).tolist()
        else:
            order = list(range(self.size))
        if self.pad and self.size % self.world_size:
            total = math.ceil(self.size / self.world_size) * self.world_size
            order = (order * math.ceil(total / self.size))[:total]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.shard()[self.start :]:
            yield self.epoch, index

    def __len__(self) -> int:
        if self.pad:
            per_rank = math.ceil(self.size / self.world_size)
        else:
            per_rank = len(range(self.rank, self.size, self.world_size))
        return max(per_rank - self.start, 0)


class SeededDataset(Dataset):
    """Wraps a dataset so that item ``(epoch, index)`` is produced under RNGs seeded by ``(seed, epoch, index)``.

    The process's own generators are restored afterwards, so loading in the main process (no workers) does
    not disturb the model's randomness (dropout, drop path, mixup).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        with forked_rng(derive_seed(self.seed, epoch, index)):
            return self.dataset[index]


def collate_items(batch: Sequence[tuple[Any, int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack ``(inputs, label, index)`` items into ``(inputs (B, ...), labels (B,), indices (B,))``.

    An item whose ``inputs`` is a list of tensors (repeated augmentation) contributes one row per tensor,
    with its label and index repeated.
    """
    inputs, labels, indices = [], [], []
    for x, label, index in batch:
        views = x if isinstance(x, (list, tuple)) else (x,)
        for view in views:
            inputs.append(view)
            labels.append(int(label))
            indices.append(int(index))
    return torch.stack(inputs), torch.tensor(labels, dtype=torch.long), torch.tensor(indices, dtype=torch.long)


class LoaderWorkerError(UserError, RuntimeError):
    """A data-loader worker died (killed by a signal, usually the out-of-memory killer); one line, exit 2."""


# torch's two wordings: its SIGCHLD handler's and the one of a queue read that finds a worker gone.
_WORKER_DIED = re.compile(
    r"DataLoader worker \(pids?(?:\(s\))? ([\d, ]+)\) (?:is killed by signal: ([^.]+)|exited unexpectedly)"
)


def describe_worker_failure(err: BaseException, workers: Sequence[Any] = ()) -> Optional[str]:
    """``"a data-loader worker (pid N) was killed by signal 9 (SIGKILL), probably by the out-of-memory killer"``
    for torch's error about a dead worker, else ``None`` (any other error).

    Args:
        workers: the loader iterator's worker processes (``_workers``): their exit codes give the signal when
            torch's text does not.
    """
    match = _WORKER_DIED.search(str(err))
    if match is None:
        return None
    pids = match.group(1).strip()
    dead = {int(p) for p in re.findall(r"\d+", pids)}
    signum: Optional[int] = None
    code: Optional[int] = None
    for worker in workers:
        exitcode = getattr(worker, "exitcode", None)
        if getattr(worker, "pid", None) in dead and exitcode is not None and exitcode != 0:
            signum, code = (-exitcode, None) if exitcode < 0 else (None, exitcode)
            break
    if signum is None and code is None and match.group(2):
        by_text = {signal.strsignal(s): s for s in signal.valid_signals() if signal.strsignal(s)}
        signum = by_text.get(match.group(2).strip())
    what = f"a data-loader worker (pid {pids})"
    if code is not None:
        return f"{what} exited with code {code}"
    if signum is None:
        return f"{what} died unexpectedly"
    try:
        name = signal.Signals(signum).name
    except ValueError:  # a real-time signal has no name
        name = "unknown"
    if signum == signal.SIGKILL:
        return f"{what} was killed by signal {signum} ({name}), probably by the out-of-memory killer"
    return f"{what} was killed by signal {signum} ({name})"


def loader_workers(iterator: Any) -> list[Any]:
    """The worker processes of a DataLoader iterator (none for ``num_workers=0``), for
    :func:`describe_worker_failure`. torch keeps them private (``_workers``): this is the one place that reads them."""
    return list(getattr(iterator, "_workers", None) or [])


def shutdown_loader(loader: DataLoader, iterator: Any = None) -> None:
    """Stop ``iterator``'s workers now and drop the iterator ``loader`` keeps for persistent workers.

    Persistent workers ignore SIGTERM (SLURM preemption), and torch stops them only at interpreter exit; torch has no
    public call for this, so its private ``_shutdown_workers`` / ``_iterator`` are used here and nowhere else.
    """
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None


def _worker_ignores_sigterm(_worker_id: int) -> None:
    # SLURM sends SIGTERM to every process of a job on preemption; the main process checkpoints at the next
    # iteration boundary, which needs the loader workers alive until then.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _kill_loader_workers() -> None:
    # multiprocessing's exit handler (registered earlier, so it runs after this one) stops daemonic children
    # with SIGTERM and joins them: workers that ignore SIGTERM would make the process hang at exit.
    for process in multiprocessing.active_children():
        if process.daemon:
            process.kill()


_exit_handler_registered = False


def _register_exit_handler() -> None:
    # Registered by the first loader with workers, not on import: importing the engine has no side effects.
    global _exit_handler_registered
    if not _exit_handler_registered:
        atexit.register(_kill_loader_workers)
        _exit_handler_registered = True


def _workers_for_this_machine(requested: int) -> int:
    """``DATA_LOADER.NUM_WORKERS`` capped at the usable CPUs (torch warns above them: the workers only contend)."""
    cpus = available_cpus()
    if requested > cpus:
        logger.info("DATA_LOADER.NUM_WORKERS %d lowered to %d: the CPUs this process may use", requested, cpus)
        return cpus
    return requested


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    train: bool,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader over one rank's shard of ``dataset``.

    Args:
        batch_size: items per batch on this rank.
        train: shuffle, pad the shard so that all ranks have equal length, drop the last partial batch and
            keep workers alive between epochs; otherwise dataset order, every item exactly once over ranks.

        num_workers: worker processes, at most the CPUs this process may use (lowered with one log line).

    Call ``loader.sampler.set_epoch(epoch, start)`` before iterating.
    """
    sampler = EpochShardSampler(
        len(dataset),  # type: ignore[arg-type]
        shuffle=train,
        seed=seed,
        rank=rank,
        world_size=world_size,
        pad=train,
    )
    num_workers = _workers_for_this_machine(num_workers)
    if num_workers > 0:
        _register_exit_handler()
    return DataLoader(
        SeededDataset(dataset, seed),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=train,
        collate_fn=collate_items,
        persistent_workers=train and num_workers > 0,
        worker_init_fn=_worker_ignores_sigterm if num_workers > 0 else None,
        # A private generator: creating an iterator must not consume the global torch RNG (resume exactness).
        generator=torch.Generator().manual_seed(seed),
    )
