"""Video data: Kinetics csv lists and Something-Something v2 label files, PyAV decoding, PySlowFast sampling, clip transforms."""

from .decoding import VideoDecodeError, VideoReader
from .failures import DecodeStats
from .kinetics import (
    ClipSampling,
    Kinetics,
    VideoListNotFound,
    build_eval_transform,
    build_train_transform,
    load_video_views,
    read_video_csv,
)
from .sampling import clip_frame_indices, get_start_end_idx, short_side_size, uniform_crop_offsets, view_indices
from .ssv2 import SSv2, load_ssv2_views, read_frame_lists, read_ssv2_classes, read_ssv2_labels, segment_frame_indices
from .transforms import ClipRandAugment, ClipRandomErasing, VideoEvalTransform, VideoTrainTransform

__all__ = [
    "ClipRandAugment",
    "ClipRandomErasing",
    "ClipSampling",
    "DecodeStats",
    "Kinetics",
    "SSv2",
    "VideoDecodeError",
    "VideoEvalTransform",
    "VideoListNotFound",
    "VideoReader",
    "VideoTrainTransform",
    "build_eval_transform",
    "build_train_transform",
    "load_ssv2_views",
    "load_video_views",
    "clip_frame_indices",
    "get_start_end_idx",
    "read_frame_lists",
    "read_ssv2_classes",
    "read_ssv2_labels",
    "read_video_csv",
    "segment_frame_indices",
    "short_side_size",
    "uniform_crop_offsets",
    "view_indices",
]
