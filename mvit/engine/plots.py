"""Training curves (loss, lr, top-1) drawn from the JSON-lines metrics file."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

__all__ = ["plot_curves", "read_metrics"]

logger = logging.getLogger(__name__)


def read_metrics(path: str) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; for records of the same split and position (a resumed run repeats some),
    the last one wins. Unparsable lines (e.g. cut by a kill) are skipped."""
    latest: dict[tuple, dict[str, Any]] = {}
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            key = (rec.get("split"), rec.get("step") if rec.get("split") == "train" else rec.get("epoch"))
            latest.pop(key, None)  # re-insert so that the order is that of the last write
            latest[key] = rec
    return sorted(latest.values(), key=lambda r: (float(r.get("epoch", 0)), str(r.get("split"))))


def _series(records: list[dict[str, Any]], split: str, key: str) -> tuple[list[float], list[float]]:
    pts = [(float(r["epoch"]), float(r[key])) for r in records if r.get("split") == split and key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(metrics_path: str, png_path: str) -> None:
    """Write a three-panel PNG (loss, learning rate, top-1 accuracy against epochs); replaced atomically."""
    # A bare Figure renders to files with Agg: no pyplot, so the caller's matplotlib backend stays as it is.
    from matplotlib.figure import Figure

    records = read_metrics(metrics_path)
    if not records:
        return
    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 3)
    ax_loss, ax_lr, ax_acc = axes
    x, y = _series(records, "train", "loss")
    if x:
        ax_loss.plot(x, y, lw=0.8, alpha=0.5, label="train (log period)")
    for split, style in (("train_epoch", "o-"), ("val", "s-"), ("val_ema", "^--")):
        x, y = _series(records, split, "loss")
        if x:
            ax_loss.plot(x, y, style, ms=3, label=split.replace("_epoch", " (epoch mean)"))
    ax_loss.set(title="loss", xlabel="epoch")
    x, y = _series(records, "train", "lr")
    if not x:
        x, y = _series(records, "train_epoch", "lr")
    if x:
        ax_lr.plot(x, y)
    ax_lr.set(title="learning rate", xlabel="epoch")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for split, style in (("train_epoch", "o-"), ("val", "s-"), ("val_ema", "^--")):
        x, y = _series(records, split, "top1")
        if x:
            ax_acc.plot(x, y, style, ms=3, label=split.replace("_epoch", ""))
    ax_acc.set(title="top-1 accuracy (%)", xlabel="epoch")
    for ax in (ax_loss, ax_acc):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = f"{png_path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, png_path)
