"""detectron2's ``DetectionCheckpointer`` without code execution on load.

detectron2 reads model-zoo ``.pkl`` files with a plain ``pickle.load``, so a crafted file runs code. This
subclass reads them with the core's restricted unpickler and reads ``.pth`` files with ``weights_only=True``
and the core's allow-list (:mod:`mvit.checkpoint.safe_io`); ``trust_pickle=True`` is the explicit opt-in.
"""

from __future__ import annotations

from typing import Any

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from mvit.checkpoint.safe_io import load_pickle, torch_load

__all__ = ["SafeDetectionCheckpointer"]


class SafeDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose reads never unpickle more than tensors and numpy data, unless trusted."""

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
