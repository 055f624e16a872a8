"""Where a clip starts and where a crop lies: PySlowFast's arithmetic, so its checkpoints see the same views.

Reference: ``slowfast/datasets/decoder.py`` (``get_start_end_idx``, ``temporal_sampling``) and
``slowfast/datasets/transform.py`` (``random_short_side_scale_jitter``, ``uniform_crop``). These are pure
functions of sizes and indices; the tests check them against numbers computed by hand.
"""

from __future__ import annotations

import math
import random
from typing import Sequence, Tuple

import torch

__all__ = [
    "clip_frame_indices",
    "get_start_end_idx",
    "short_side_size",
    "eval_short_side",
    "view_indices",
    "uniform_crop_offsets",
]


def get_start_end_idx(
    video_size: float, clip_size: float, clip_idx: int, num_clips: int, use_offset: bool = False
) -> Tuple[float, float]:
    """First and last (fractional) frame index of a clip of ``clip_size`` frames.

    Args:
        video_size: frames in the video.
        clip_size: frames the clip spans (may be fractional when the video fps differs from the target fps).
        clip_idx: -1 for a random start (training), else which of ``num_clips`` uniformly spaced clips.
        num_clips: number of uniformly spaced clips at test time.
        use_offset: PySlowFast's ``USE_OFFSET_SAMPLING``: starts at ``i * floor(delta / (num_clips - 1))``
            (first clip at 0, last at the end; the middle clip for ``num_clips == 1``); otherwise
            ``delta * i / num_clips``.
    Returns:
        ``(start, end)`` with ``end = start + clip_size - 1``.
    """
    delta = max(video_size - clip_size, 0)
    if clip_idx == -1:
        start = random.uniform(0, delta)
    elif use_offset:
        start = math.floor(delta / 2) if num_clips == 1 else clip_idx * math.floor(delta / (num_clips - 1))
    else:
        start = delta * clip_idx / num_clips
    return start, start + clip_size - 1


def clip_frame_indices(
    video_size: int,
    num_frames: int,
    sampling_rate: int,
    video_fps: float,
    target_fps: float,
    clip_idx: int,
    num_clips: int,
    use_offset: bool = False,
) -> torch.Tensor:
    """Frame indices of one clip of ``num_frames`` frames taken every ``sampling_rate`` frames at ``target_fps``.

    The clip spans ``num_frames * sampling_rate * video_fps / target_fps`` frames of the video; its frames are
    ``linspace(start, end, num_frames)`` truncated to integers and clamped to the video, so a video shorter
    than the clip repeats its last frame (PySlowFast's ``temporal_sampling``, float32 arithmetic included).

    Returns:
        (num_frames,) int64 indices in ``[0, video_size - 1]``.
    """
    if video_size < 1:
        raise ValueError(f"a video needs at least one frame, got video_size={video_size}")
    clip_size = max(1.0, num_frames * sampling_rate * video_fps / target_fps)
    start, end = get_start_end_idx(video_size, clip_size, clip_idx, num_clips, use_offset)
    index = torch.linspace(start, end, num_frames)
    return torch.clamp(index, 0, video_size - 1).long()


def short_side_size(height: int, width: int, size: int) -> Tuple[int, int]:
    """``(new_height, new_width)`` after resizing the short side to ``size`` (long side floored, as PySlowFast)."""
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(math.floor(height / width * size)), size
    return size, int(math.floor(width / height * size))


def uniform_crop_offsets(height: int, width: int, size: int, spatial_idx: int) -> Tuple[int, int]:
    """``(y, x)`` of the top-left corner of a ``size`` x ``size`` test crop.

    ``spatial_idx`` 0 / 1 / 2 is the start / center / end of the long side (left / center / right for a
    landscape frame, top / center / bottom for a portrait one); the short side is always centered (ceil).
    """
    if spatial_idx not in (0, 1, 2):
        raise ValueError(f"spatial_idx must be 0, 1 or 2, got {spatial_idx}")
    y = int(math.ceil((height - size) / 2))
    x = int(math.ceil((width - size) / 2))
    if height > width:
        y = {0: 0, 1: y, 2: height - size}[spatial_idx]
    else:
        x = {0: 0, 1: x, 2: width - size}[spatial_idx]
    return y, x


def view_indices(view: int, num_spatial_crops: int) -> Tuple[int, int]:
    """``(temporal_idx, spatial_idx)`` of test view ``view`` (views of a video are clip-major, as PySlowFast).

    With one crop per clip the crop is the center one (spatial index 1).
    """
    temporal_idx = view // num_spatial_crops
    spatial_idx = view % num_spatial_crops if num_spatial_crops > 1 else 1
    return temporal_idx, spatial_idx


def eval_short_side(test_short_side: int, train_jitter_scales: Sequence[int], crop_size: int, num_crops: int) -> int:
    """Short side of the frames at test time: ``test_short_side`` if set, else PySlowFast's rule."""
    if test_short_side > 0:
        return int(test_short_side)
    return int(crop_size) if num_crops > 1 else int(train_jitter_scales[0])
