"""Loading the released weights of the registry (:mod:`mvit.models.weights`): download, verify, load."""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..models.weights import Weights
from .formats import LoadReport, load_checkpoint
from .hub import download

__all__ = ["load_pretrained"]


def load_pretrained(model: nn.Module, weights: Weights, *, strict: bool = True, progress: bool = True) -> LoadReport:
    """Download (or find in torch.hub's cache) the file of ``weights`` and load it into ``model``.

    Returns the :class:`~mvit.checkpoint.LoadReport`. A detector's weights are refused: they hold a whole
    detectron2 model (use them as ``train.init_checkpoint=zoo:<tag>`` in projects/detection).
    """
    if weights.detector is not None:
        raise ConfigError(
            f"{weights.tag} is a whole detectron2 detector ({weights.detector}): load it in projects/detection "
            f"with train.init_checkpoint=zoo:{weights.tag}"
        )
    path = download(weights.url, weights.sha256, progress=progress)
    return load_checkpoint(model, path, strict=strict)
