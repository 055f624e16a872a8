"""Loading the released weights of the registry (:mod:`mvit.models.weights`): download, verify, load."""

from __future__ import annotations

import logging
import os
from typing import Optional

from torch import nn

from ..errors import ConfigError
from ..models.weights import Weights
from .formats import LoadReport, load_checkpoint
from .hub import download

__all__ = ["SOURCE_ENV", "load_pretrained", "weights_file"]

logger = logging.getLogger(__name__)

SOURCE_ENV = "MVIT_WEIGHTS_SOURCE"  # "url" (the publisher's, default) or "hf" (timm's release on the HF hub)
_SOURCES = ("url", "hf")


def weights_file(weights: Weights, *, progress: bool = True, source: Optional[str] = None) -> str:
    """The local path of ``weights``' file: from the publisher's URL (torch.hub's cache) or, with
    ``source="hf"`` (default: ``$MVIT_WEIGHTS_SOURCE``, else ``"url"``), the same weights as timm's safetensors
    release on the Hugging Face hub where there is one (others come from their URL, logged)."""
    source = (source or os.environ.get(SOURCE_ENV, "") or "url").strip().lower()
    if source not in _SOURCES:
        raise ConfigError(f"{SOURCE_ENV}={source!r}: expected one of {', '.join(_SOURCES)}")
    if source == "hf":
        if weights.hf_hub_id:
            from .hf_hub import hf_download

            return hf_download(weights.hf_hub_id)
        logger.info("%s is not on the Hugging Face hub; downloading it from %s", weights.tag, weights.url)
    return download(weights.url, weights.sha256, progress=progress)


def load_pretrained(
    model: nn.Module, weights: Weights, *, strict: bool = True, progress: bool = True, source: Optional[str] = None
) -> LoadReport:
    """Download (or find in the cache) the file of ``weights`` and load it into ``model``.

    ``source``: ``"url"`` (the publisher's file, torch.hub's cache) or ``"hf"`` (timm's release on the Hugging
    Face hub); default ``$MVIT_WEIGHTS_SOURCE``, else ``"url"`` (see :func:`weights_file`).

    Returns the :class:`~mvit.checkpoint.LoadReport`. A detector's weights are refused: they hold a whole
    detectron2 model (use them as ``train.init_checkpoint=zoo:<tag>`` in projects/detection).
    """
    if weights.detector is not None:
        raise ConfigError(
            f"{weights.tag} is a whole detectron2 detector ({weights.detector}): load it in projects/detection "
            f"with train.init_checkpoint=zoo:{weights.tag}"
        )
    return load_checkpoint(model, weights_file(weights, progress=progress, source=source), strict=strict)
