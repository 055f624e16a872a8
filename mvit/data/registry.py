"""Registries through which projects plug data into the shared engine.

Datasets
    ``register_dataset(name, builder)``; ``builder(cfg, split) -> torch.utils.data.Dataset`` with ``split`` in
    ``{"train", "val", "test"}`` ("val": evaluation during training; "test": the final, possibly multi-view,
    test). ``TRAIN.DATASET`` picks the train and val datasets, ``TEST.DATASET`` the test one.

    An item is ``(inputs, label, index)``: ``inputs`` a float tensor ``(C, H, W)`` or ``(C, T, H, W)`` (or a
    list of ``AUG.NUM_SAMPLE`` such tensors for repeated augmentation, each becoming its own row of the batch:
    a training batch then holds ``rows / AUG.NUM_SAMPLE`` items), ``label`` an int and ``index`` the item's index
    in the dataset. Augmentation may use python's, numpy's and torch's global generators freely: the engine
    seeds them per item from ``(RNG_SEED, epoch, index)``. Optional dataset attributes the engine reads:

    - ``classes: list[str]``: class names, stored in checkpoints for ``tools/predict.py``;
    - ``aggregate(indices, scores, labels) -> (scores, labels)``: multi-view testing. The engine gathers the
      ``(index (N,), logits (N, K), label (N,))`` of every item from every rank and scores the aggregated
      ``(scores (M, K), labels (M,))`` instead of the items. When ``aggregate`` takes a ``name`` keyword it
      gets what is evaluated ("val", "val_ema", "test", "test_ema");
    - ``train_hooks() -> list[HookBase]``: trainer hooks of the training set (e.g. one that stops an epoch in
      which too many items were unreadable), run after the lr schedule and before evaluation and checkpoints.

Prediction input loaders
    ``register_input_loader(name, loader, suffixes)``; ``loader(cfg, path) -> Tensor`` returns one model input
    ``(C, H, W)`` / ``(C, T, H, W)``, or ``(V, ...)`` views whose softmax scores are averaged. ``tools/predict.py``
    picks the loader by file suffix (the classification project registers images, the video project videos).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Callable

import torch
from fvcore.common.config import CfgNode
from torch.utils.data import Dataset

from ..errors import ConfigError

__all__ = [
    "DatasetBuilder",
    "InputLoader",
    "build_dataset",
    "check_datasets",
    "find_input_loader",
    "list_datasets",
    "register_dataset",
    "register_input_loader",
]

DatasetBuilder = Callable[[CfgNode, str], Dataset]
InputLoader = Callable[[CfgNode, str], torch.Tensor]

_DATASETS: dict[str, DatasetBuilder] = {}


@dataclass(frozen=True)
class _LoaderEntry:
    name: str
    loader: InputLoader
    suffixes: tuple[str, ...]


_INPUT_LOADERS: dict[str, _LoaderEntry] = {}


def register_dataset(name: str, builder: DatasetBuilder) -> DatasetBuilder:
    """Register ``builder`` under ``name`` (case-insensitive); registering the same builder again is a no-op.

    Raises:
        ValueError: another builder already owns ``name``.
    """
    key = name.lower()
    old = _DATASETS.get(key)
    if old is not None and old is not builder and getattr(old, "__qualname__", None) != builder.__qualname__:
        raise ValueError(f"dataset {name!r} is already registered by {old.__module__}.{old.__qualname__}")
    _DATASETS[key] = builder
    return builder


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def _unknown_dataset(name: str) -> str:
    """What an unknown dataset name is told: the closest registered name and all of them."""
    close = difflib.get_close_matches(name.lower(), list_datasets(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown dataset {name!r}{hint}; registered: {', '.join(list_datasets()) or 'none'}"


def check_datasets(cfg: CfgNode) -> None:
    """Check, right after the config is loaded (and the projects that register datasets imported), that the datasets
    the run will build are registered: ``TRAIN.DATASET`` when training, ``TEST.DATASET`` when testing.

    Raises:
        ConfigError: naming the key, the closest registered name and all of them.
    """
    for section in ("TRAIN", "TEST"):
        node = cfg.get(section)
        if node is not None and node.get("ENABLE", True) and "DATASET" in node:
            if str(node.DATASET).lower() not in _DATASETS:
                raise ConfigError(f"{section}.DATASET: {_unknown_dataset(str(node.DATASET))}")


def build_dataset(name: str, cfg: CfgNode, split: str) -> Dataset:
    """Build the ``split`` of the dataset registered as ``name``.

    Raises:
        ConfigError: unknown name (the message lists the registered ones; :func:`check_datasets` names the key).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    builder = _DATASETS.get(name.lower())
    if builder is None:
        raise ConfigError(_unknown_dataset(name))
    return builder(cfg, split)


def register_input_loader(name: str, loader: InputLoader, suffixes: tuple[str, ...]) -> InputLoader:
    """Register a prediction input loader for files ending in one of ``suffixes`` (e.g. ``(".jpg", ".png")``)."""
    _INPUT_LOADERS[name] = _LoaderEntry(name, loader, tuple(s.lower() for s in suffixes))
    return loader


def find_input_loader(path: str) -> InputLoader:
    """The loader registered for ``path``'s suffix.

    Raises:
        ValueError: no loader handles the suffix (the message lists the known suffixes).
    """
    suffix = os.path.splitext(path)[1].lower()
    for entry in _INPUT_LOADERS.values():
        if suffix in entry.suffixes:
            return entry.loader
    known = ", ".join(
        f"{e.name} ({len(e.suffixes)} suffixes, e.g. {', '.join(e.suffixes[:3])})" for e in _INPUT_LOADERS.values()
    )
    raise ValueError(f"{path}: no input loader for {suffix or 'files without a suffix'!r}; loaders: {known or 'none'}")
