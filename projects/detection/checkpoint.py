"""detectron2's ``DetectionCheckpointer`` without code execution on load, and with atomic saves.

detectron2 reads model-zoo ``.pkl`` files with a plain ``pickle.load``, so a crafted file runs code. This
subclass reads them with the core's restricted unpickler and reads ``.pth`` files with ``weights_only=True``
and the core's allow-list (:mod:`mvit.checkpoint.safe_io`); ``trust_pickle=True`` is the explicit opt-in.

fvcore's ``Checkpointer.save`` writes ``model_XXXX.pth`` and then ``last_checkpoint`` in place: a process killed
while writing either (SIGKILL after a scheduler's grace time, a node failure) leaves a truncated file that
``--resume`` then reads, or an empty ``last_checkpoint``. Here both go through a temporary file and a rename
(:func:`mvit.checkpoint.state.atomic_write`): a reader sees the previous file or the complete new one.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from mvit.checkpoint.safe_io import load_pickle, torch_load
from mvit.checkpoint.state import atomic_write

__all__ = ["SafeDetectionCheckpointer"]


class SafeDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose reads never unpickle more than tensors and numpy data, unless trusted,
    and whose writes (``{name}.pth``, then ``last_checkpoint``) are atomic."""

    def __init__(self, *args: Any, trust_pickle: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trust_pickle = trust_pickle

    def _load_file(self, filename: str) -> dict:
        if not filename.endswith(".pkl"):
            return super()._load_file(filename)  # .pth / .pyth: through _torch_load below
        with PathManager.open(filename, "rb") as f:
            data = load_pickle(f, filename, trust_pickle=self.trust_pickle)
        if "model" in data and "__author__" in data:  # detectron2 model zoo layout
            self.logger.info("Reading a file from '{}'".format(data["__author__"]))
            return data
        blobs = data.get("blobs", data)  # Caffe2 / Detectron1 layouts, as detectron2 reads them
        blobs = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
        return {"model": blobs, "__author__": "Caffe2", "matching_heuristics": True}

    def _torch_load(self, f: str) -> Any:
        with PathManager.open(f, "rb") as fh:
            return torch_load(fh, f, trust_pickle=self.trust_pickle)

    def save(self, name: str, **kwargs: Any) -> None:
        """``{save_dir}/{name}.pth`` with the model, the checkpointables and ``kwargs``; then ``last_checkpoint``
        names it. Each file is renamed into place complete, so a kill at any moment leaves the previous one."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"), lambda f: f.write(last_filename_basename.encode()))
