"""Accuracy and running-average meters whose totals are summed exactly over ranks."""

from __future__ import annotations

from typing import Sequence

import torch

from ..utils.distributed import all_reduce_sum

__all__ = ["ClassificationMeter", "ScalarMeter", "topk_correct", "topk_correct_counts"]


def topk_correct_counts(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """:func:`topk_correct` as a ``(len(ks),)`` int64 tensor on the scores' device (no host read)."""
    if scores.shape[0] == 0:
        return torch.zeros(len(ks), dtype=torch.int64, device=scores.device)
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices  # (N, kmax)
    hit = top.eq(labels.view(-1, 1))  # (N, kmax)
    return torch.stack([hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks])


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """Number of rows whose label is among the ``k`` highest scores, for each ``k`` (capped at the class count).

    Args:
        scores: (N, K) logits or probabilities.
        labels: (N,) class indices.
    """
    return [int(c) for c in topk_correct_counts(scores, labels, ks).tolist()]


class ClassificationMeter:
    """Top-1 / top-5 counts and summed loss over an evaluation, reduced over ranks by :meth:`compute`."""

    def __init__(self) -> None:
        self.correct1 = self.correct5 = self.count = 0
        self.loss_sum = 0.0

    def update(self, scores: torch.Tensor, labels: torch.Tensor, loss_sum: float = 0.0) -> None:
        """Args: scores (N, K); labels (N,); loss_sum: the loss summed (not averaged) over the N rows."""
        c1, c5 = topk_correct(scores.float(), labels, (1, 5))
        self.correct1 += c1
        self.correct5 += c5
        self.count += labels.numel()
        self.loss_sum += float(loss_sum)

    def compute(self, reduce: bool = True) -> dict[str, float]:
        """``{"top1", "top5"}`` in percent, ``"loss"`` (mean) and ``"num_samples"``, summed over ranks."""
        totals = torch.tensor([self.correct1, self.correct5, self.count, self.loss_sum], dtype=torch.float64)
        if reduce:
            totals = all_reduce_sum(totals)
        c1, c5, n, loss = totals.tolist()
        n = max(n, 1.0)
        return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss / n, "num_samples": int(totals[2])}


class ScalarMeter:
    """Running sums of named scalars (e.g. the training loss) averaged over updates and ranks.

    A value given as a tensor (e.g. a gradient norm on the GPU) is summed on its device in float64, the arithmetic
    of a Python float, and read on the host only by :meth:`averages` / :meth:`state_dict` (one read for all keys).
    """

    def __init__(self) -> None:
        self.sums: dict[str, float | torch.Tensor] = {}
        self.counts: dict[str, float] = {}

    def update(self, n: int = 1, **values: float | torch.Tensor) -> None:
        """Add each value weighted by ``n`` (e.g. a batch-mean loss with ``n`` = batch size)."""
        for key, value in values.items():
            term = value.detach().double() * n if isinstance(value, torch.Tensor) else float(value) * n
            self.sums[key] = self.sums.get(key, 0.0) + term
            self.counts[key] = self.counts.get(key, 0.0) + n

    def host_sums(self) -> dict[str, float]:
        """The sums as Python floats (one host read for all the tensor sums)."""
        on_device = [k for k, v in self.sums.items() if isinstance(v, torch.Tensor)]
        sums = {k: v for k, v in self.sums.items() if not isinstance(v, torch.Tensor)}
        if on_device:
            sums.update(zip(on_device, torch.stack([self.sums[k] for k in on_device]).tolist()))
        return sums

    def state_dict(self) -> dict[str, dict[str, float]]:
        """``{"sums", "counts"}`` as floats (for a checkpoint)."""
        return {"sums": self.host_sums(), "counts": dict(self.counts)}

    def reset(self) -> None:
        self.sums.clear()
        self.counts.clear()

    def averages(self, reduce: bool = True) -> dict[str, float]:
        """Weighted mean of each key over updates (and over ranks when ``reduce``; a collective then)."""
        keys = sorted(self.sums)
        if not keys:
            return {}
        host = self.host_sums()
        buf = torch.tensor([host[k] for k in keys] + [self.counts[k] for k in keys], dtype=torch.float64)
        if reduce:
            buf = all_reduce_sum(buf)
        values = buf.tolist()
        sums, counts = values[: len(keys)], values[len(keys) :]
        return {k: float(s / max(c, 1e-12)) for k, s, c in zip(keys, sums, counts)}
