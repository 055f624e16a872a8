"""Multi-view testing: combine the scores of the views of each video, video-level top-k, saved view scores.

PySlowFast sums the softmax scores of the ``NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS`` views of a video (its
heads apply softmax at test time; ours return logits, so :func:`aggregate_views` callers pass
``logits.softmax(-1)``). Views are keyed by ``(video, view)``: a view that arrives twice (a distributed
sampler padding its last batch, a replacement for an unreadable video) counts once, as its scores are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from iopath.common.file_io import g_pathmgr

__all__ = ["MultiViewResult", "aggregate_views", "save_view_scores"]


@dataclass
class MultiViewResult:
    """Video-level results of a multi-view test.

    Attributes:
        video_scores: (V, K) combined scores (0 for a video without any view).
        view_scores: (V, num_views, K) per-view scores, NaN where a view is missing.
        labels: (V,) int64 labels, -1 for a video without any view.
        views_seen: (V,) number of distinct views received per video.
        topk: ``{k: accuracy in percent}`` over the videos with at least one view.
        num_videos: videos with at least one view (the denominator of ``topk``).
    """

    video_scores: torch.Tensor
    view_scores: torch.Tensor
    labels: torch.Tensor
    views_seen: torch.Tensor
    topk: Dict[int, float]
    num_videos: int


def aggregate_views(
    scores: torch.Tensor,
    labels: torch.Tensor,
    video_index: torch.Tensor,
    view_index: torch.Tensor,
    num_videos: int,
    num_views: int,
    method: str = "sum",
    ks: Sequence[int] = (1, 5),
) -> MultiViewResult:
    """Combine per-view scores into per-video scores and video-level top-k accuracy.

    Args:
        scores: (N, K) scores of N views (softmax probabilities for PySlowFast's ensemble).
        labels: (N,) label of the video of each view.
        video_index / view_index: (N,) which video and which of its ``num_views`` views each row is.
        method: "sum" (PySlowFast's default) or "max" over the views of a video.
        ks: top-k accuracies to report; k larger than K counts as K.
    """
    if method not in ("sum", "max"):
        raise ValueError(f"TEST.ENSEMBLE_METHOD must be 'sum' or 'max', got {method!r}")
    scores = scores.detach().float().cpu()
    video_index, view_index = video_index.long().cpu(), view_index.long().cpu()
    n, num_classes = scores.shape
    if not (labels.shape[0] == video_index.shape[0] == view_index.shape[0] == n):
        raise ValueError("scores, labels, video_index and view_index need the same length")
    if n and (video_index.max() >= num_videos or view_index.max() >= num_views or video_index.min() < 0):
        raise ValueError(f"video / view index out of range ({num_videos} videos x {num_views} views)")

    view_scores = torch.full((num_videos, num_views, num_classes), float("nan"))
    view_scores[video_index, view_index] = scores  # a repeated (video, view) is written twice, kept once
    present = ~view_scores[..., 0].isnan()
    video_labels = torch.full((num_videos,), -1, dtype=torch.long)
    video_labels[video_index] = labels.long().cpu()

    filled = view_scores.nan_to_num(nan=0.0 if method == "sum" else float("-inf"))
    video_scores = filled.sum(1) if method == "sum" else filled.max(1).values
    seen = present.any(1)
    video_scores[~seen] = 0.0

    topk = {}
    evaluated = int(seen.sum())
    for k in ks:
        top = video_scores[seen].topk(min(k, num_classes), dim=1).indices
        hits = (top == video_labels[seen, None]).any(1).sum().item()
        topk[k] = 100.0 * hits / evaluated if evaluated else 0.0
    return MultiViewResult(video_scores, view_scores, video_labels, present.sum(1), topk, evaluated)


def save_view_scores(result: MultiViewResult, path: str, video_paths: Optional[Sequence[str]] = None) -> None:
    """Write the per-view and per-video scores, labels and view counts as an ``.npz`` file (iopath path)."""
    arrays = {
        "view_scores": result.view_scores.numpy(),
        "video_scores": result.video_scores.numpy(),
        "labels": result.labels.numpy(),
        "views_seen": result.views_seen.numpy(),
    }
    if video_paths is not None:
        arrays["video_paths"] = np.asarray(list(video_paths), dtype=str)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        g_pathmgr.mkdirs(parent)
    with g_pathmgr.open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
