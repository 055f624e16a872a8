"""Evaluation loop: top-1 / top-5 over all ranks, per item or through the dataset's multi-view ``aggregate``."""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.loader import SeededDataset
from ..utils.distributed import all_gather_object
from .meters import ClassificationMeter

__all__ = ["EvalResult", "autocast_context", "evaluate", "unwrap_dataset"]


@dataclass
class EvalResult:
    """Metrics (``top1``, ``top5`` in percent, ``loss``, ``num_samples``), and, when requested, the gathered
    outputs of every item: ``indices`` (N,), ``scores`` (N, K) logits, ``labels`` (N,) (all ranks, sorted by
    index), plus the aggregated ``(M, K)`` / ``(M,)`` of a multi-view dataset."""

    metrics: dict[str, float]
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)


def unwrap_dataset(loader: DataLoader):
    """The project's dataset behind an engine loader."""
    dataset = loader.dataset
    return dataset.dataset if isinstance(dataset, SeededDataset) else dataset


def autocast_context(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for a reduced-precision ``dtype``, a no-op for ``None`` (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    progress: bool = False,
    desc: str = "eval",
    return_outputs: bool = False,
) -> EvalResult:
    """Score every item of ``loader`` (this rank's shard) and reduce the metrics over ranks.

    Every rank must call this (collectives). With a dataset that defines
    ``aggregate(indices, scores, labels) -> (scores, labels)``, the per-item ``(index, logits, label)`` of all
    ranks are gathered and the metrics are computed on the aggregate (e.g. per video over its views);
    otherwise per item, with the mean hard-label cross-entropy as ``loss``.

    Args:
        model: the unwrapped model (not DDP), put in eval mode here.
    """
    was_training = model.training
    model.eval()
    aggregate = getattr(unwrap_dataset(loader), "aggregate", None)
    keep = aggregate is not None or return_outputs
    meter = ClassificationMeter()
    indices_l, scores_l, labels_l = [], [], []
    for inputs, labels, indices in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        inputs = inputs.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with autocast_context(device, amp_dtype):
            logits = model(inputs)
        logits = logits.float()
        if keep:
            indices_l.append(indices.cpu())
            scores_l.append(logits.cpu())
            labels_l.append(labels.cpu())
        if aggregate is None:
            meter.update(logits, labels, F.cross_entropy(logits, labels, reduction="sum").item())
    model.train(was_training)

    outputs: dict[str, torch.Tensor] = {}
    if keep:
        num_classes = scores_l[0].shape[1] if scores_l else 0
        local = (
            torch.cat(indices_l) if indices_l else torch.zeros(0, dtype=torch.long),
            torch.cat(scores_l) if scores_l else torch.zeros(0, num_classes),
            torch.cat(labels_l) if labels_l else torch.zeros(0, dtype=torch.long),
        )
        parts = [p for p in all_gather_object(local) if p[0].numel()]
        idx = torch.cat([p[0] for p in parts])
        order = idx.argsort(stable=True)
        outputs = {
            "indices": idx[order],
            "scores": torch.cat([p[1] for p in parts])[order],
            "labels": torch.cat([p[2] for p in parts])[order],
        }
    if aggregate is not None:
        args = (outputs["indices"], outputs["scores"], outputs["labels"])
        # The name ("val", "val_ema", "test") lets a dataset tell several evaluations apart (e.g. in file names).
        takes_name = "name" in inspect.signature(aggregate).parameters
        agg_scores, agg_labels = aggregate(*args, name=desc) if takes_name else aggregate(*args)
        outputs.update(aggregated_scores=agg_scores, aggregated_labels=agg_labels)
        meter.update(agg_scores, agg_labels)
        metrics = meter.compute(reduce=False)  # every rank already holds every item
        metrics.pop("loss")
    else:
        metrics = meter.compute(reduce=True)
    return EvalResult(metrics, outputs if return_outputs or aggregate is not None else {})
