"""Kinetics-style video data: csv lists, PyAV decoding, PySlowFast clip sampling, clip transforms."""

from .decoding import VideoDecodeError, VideoReader
from .failures import DecodeStats, FailedItemsCheck
from .kinetics import (
    ClipSampling,
    Kinetics,
    VideoListNotFound,
    build_eval_transform,
    load_video_views,
    read_video_csv,
)
from .sampling import clip_frame_indices, get_start_end_idx, short_side_size, uniform_crop_offsets, view_indices
from .transforms import ClipRandAugment, ClipRandomErasing, VideoEvalTransform, VideoTrainTransform

__all__ = [
    "ClipRandAugment",
    "ClipRandomErasing",
    "ClipSampling",
    "DecodeStats",
    "FailedItemsCheck",
    "Kinetics",
    "VideoDecodeError",
    "VideoEvalTransform",
    "VideoListNotFound",
    "VideoReader",
    "VideoTrainTransform",
    "build_eval_transform",
    "load_video_views",
    "clip_frame_indices",
    "get_start_end_idx",
    "read_video_csv",
    "short_side_size",
    "uniform_crop_offsets",
    "view_indices",
]
