"""Trainer hooks of the video datasets (the training loop's side of :mod:`projects.video.data.failures`).

:class:`FailedItemsCheck` sums the :class:`~projects.video.data.failures.DecodeStats` counts over the ranks and raises
a :class:`~mvit.errors.DataError` when more than ``DATA.MAX_FAILED_FRACTION`` of an epoch's items failed: as soon as
that is certain (every step), or at the end of the epoch, before it is evaluated and checkpointed. Apart from
``projects/video/data`` so that the datasets import no training loop.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

from mvit.engine.train_loop import HookBase
from mvit.errors import DataError
from mvit.utils.distributed import all_reduce_sum, get_world_size

from .data.failures import DecodeStats

__all__ = ["FailedItemsCheck"]

logger = logging.getLogger(__name__)


class FailedItemsCheck(HookBase):
    """Stops training when more than ``max_fraction`` of an epoch's items had an unreadable video.

    Every rank must run it (the counts are summed over ranks at each step). The error names ``source`` (the
    csv file) and the counts; the files themselves are named in the log, where each was reported when it
    failed. ``max_fraction`` >= 1 never stops, but the count is still logged after each epoch.
    """

    def __init__(self, stats: DecodeStats, max_fraction: float, source: str) -> None:
        self.stats, self.max_fraction, self.source = stats, float(max_fraction), source
        self._epoch_start = torch.zeros(2, dtype=torch.int64)
        self._epoch_items: Optional[int] = None

    def _epoch_counts(self) -> tuple[int, int, torch.Tensor]:
        """Items loaded and replaced in this epoch, summed over ranks (a collective), and this rank's totals."""
        now = self.stats.totals()
        items, failed = all_reduce_sum(now - self._epoch_start).tolist()
        return int(items), int(failed), now

    def _limit_error(self, failed: int, items: int, so_far: bool) -> DataError:
        epoch = self.trainer.epoch + 1
        what = f"already {failed} of the {items} training items of epoch {epoch} failed to decode" if so_far else (
            f"{failed} of the {items} training items of epoch {epoch} could not be decoded"
        )  # fmt: skip
        return DataError(
            f"{self.source}: {what} (more than DATA.MAX_FAILED_FRACTION={self.max_fraction:g}); "
            "the warnings in the log name each file"
        )

    def before_train(self) -> None:
        # Counted from here: the loader's workers start (and prefetch) only when the first epoch begins.
        self._epoch_start = self.stats.totals()

    def before_epoch(self) -> None:
        t = self.trainer
        per_step = getattr(t, "accum_steps", 1) * getattr(t, "items_per_batch", 0) * get_world_size()
        # Items this epoch loads over all ranks from here (fewer when resumed mid-epoch); None = unknown.
        self._epoch_items = (t.iters_per_epoch - t.iter) * per_step or None

    def after_step(self) -> None:
        if self.max_fraction >= 1 or self._epoch_items is None:
            return
        items, failed, _ = self._epoch_counts()
        total = max(self._epoch_items, items)
        # Certain already: even if every remaining item loads, the epoch's share stays above the limit.
        if failed > self.max_fraction * total:
            raise self._limit_error(failed, total, so_far=True)

    def after_epoch(self) -> None:
        items, failed, self._epoch_start = self._epoch_counts()
        if failed:
            logger.warning(
                "epoch %d: %d of %d training items (%.1f%%) had an unreadable video and were replaced by another one",
                self.trainer.epoch + 1,
                failed,
                items,
                100.0 * failed / max(items, 1),
            )
        if items and failed > self.max_fraction * items:
            raise self._limit_error(failed, items, so_far=False)
