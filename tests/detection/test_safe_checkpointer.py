"""detectron2 checkpoints load without running code from the file."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from mvit.errors import CheckpointError
from projects.detection.checkpoint import SafeDetectionCheckpointer


class _CreatesFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _zoo_pickle(path, model: nn.Module, **extra) -> None:
    arrays = {k: v.numpy() for k, v in model.state_dict().items()}
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "Detectron2 Model Zoo", **extra}, f)


def test_model_zoo_pickle_loads(tmp_path):
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    _zoo_pickle(tmp_path / "model_final.pkl", source)
    SafeDetectionCheckpointer(target).load(str(tmp_path / "model_final.pkl"))
    assert torch.equal(target.weight, source.weight)


def test_code_carrying_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    _zoo_pickle(tmp_path / "model_final.pkl", nn.Linear(3, 2), note=_CreatesFile(str(marker)))
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        SafeDetectionCheckpointer(nn.Linear(3, 2)).load(str(tmp_path / "model_final.pkl"))
    assert not marker.exists()


def test_code_carrying_pth_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": nn.Linear(3, 2).state_dict(), "note": _CreatesFile(str(marker))}, tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="io.open"):
        SafeDetectionCheckpointer(nn.Linear(3, 2)).load(str(tmp_path / "model.pth"))
    assert not marker.exists()
