"""Kinetics-400 and Something-Something v2 video classification with MViTv2 on the shared core and engine.

Importing the package registers, with the engine, the ``kinetics`` and ``ssv2`` datasets (``TRAIN.DATASET`` /
``TEST.DATASET``) and the video input loader of ``tools/predict.py``; :func:`add_video_config` adds the
config keys (pass it to :func:`mvit.config.load_config` as an extension).
"""

import torch
from fvcore.common.config import CfgNode

from mvit.data.registry import register_dataset, register_input_loader

from .config import add_video_config
from .data import Kinetics, SSv2, load_ssv2_views, load_video_views

__all__ = ["VIDEO_SUFFIXES", "add_video_config", "load_views"]

# Containers PyAV reads that Kinetics and common video sources use.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")


def load_views(cfg: CfgNode, path: str) -> torch.Tensor:
    """The test views of a video file, sampled as the config's test data set samples them."""
    ssv2 = cfg.TEST.DATASET.lower() == "ssv2"
    return load_ssv2_views(cfg, path) if ssv2 else load_video_views(cfg, path)


register_dataset("kinetics", Kinetics.from_config)
register_dataset("ssv2", SSv2.from_config)
register_input_loader("video", load_views, VIDEO_SUFFIXES)
