"""Count the training items whose video could not be decoded.

An unreadable video is replaced by another one (PySlowFast's retry loop), so a run with many missing or corrupt
files would otherwise train on a fraction of its data without saying so. :class:`DecodeStats` counts, in shared
memory, the items every loader worker of a process loaded and how many of them had to be replaced; the trainer hook
:class:`projects.video.hooks.FailedItemsCheck` stops an epoch where too many failed.
"""

from __future__ import annotations

import torch
from torch.utils.data import get_worker_info

__all__ = ["DecodeStats"]


class DecodeStats:
    """(items loaded, items replaced) counters shared by a process and its data-loader workers.

    One row per process (the main one and each worker id), each written by that process only, so no lock is
    needed; the tensor lives in shared memory, which forked and spawned workers alike see. Create it before the
    loader starts its workers.
    """

    SLOTS = 256  # the main process and up to 255 loader workers (more share rows and may lose counts)

    def __init__(self) -> None:
        self.counts = torch.zeros(self.SLOTS, 2, dtype=torch.int64).share_memory_()

    def record(self, failed: bool) -> None:
        """Count one item; ``failed``: its own video could not be decoded and another one was used."""
        info = get_worker_info()
        row = self.counts[0 if info is None else 1 + info.id % (self.SLOTS - 1)]
        row[0] += 1
        row[1] += int(failed)

    def totals(self) -> torch.Tensor:
        """(2,) int64: items loaded and items replaced so far, over this process and its workers."""
        return self.counts.sum(0)
