"""Kinetics-400 and Something-Something v2 video classification with MViTv2 on the shared core and engine.

Importing the package registers, with the engine, the ``kinetics`` and ``ssv2`` datasets (``TRAIN.DATASET`` /
``TEST.DATASET``) and the video input loader of ``tools/predict.py``; :func:`add_video_config` adds the
config keys (pass it to :func:`mvit.config.load_config` as an extension).
"""

from mvit.engine.registry import register_dataset, register_input_loader

from .config import add_video_config
from .data import Kinetics, SSv2, load_video_views

__all__ = ["VIDEO_SUFFIXES", "add_video_config"]

# Containers PyAV reads that Kinetics and common video sources use.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")

register_dataset("kinetics", Kinetics.from_config)
register_dataset("ssv2", SSv2.from_config)
register_input_loader("video", load_video_views, VIDEO_SUFFIXES)
