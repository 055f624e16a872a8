"""Config keys of the image classification project."""

from __future__ import annotations

from fvcore.common.config import CfgNode

__all__ = ["add_classification_config"]


def add_classification_config(cfg: CfgNode) -> None:
    """Add the image-folder keys to ``cfg`` in place."""
    # Sub-folders of DATA.PATH_TO_DATA_DIR holding the training and the validation / test images.
    cfg.DATA.TRAIN_DIR = "train"
    cfg.DATA.VAL_DIR = "val"
