"""Clip start indices and crop offsets equal PySlowFast's, checked against numbers computed by hand.

PySlowFast (decoder.get_start_end_idx + temporal_sampling): a clip spans ``clip = T * tau * fps / 30`` frames;
``delta = max(N - clip, 0)``; with USE_OFFSET_SAMPLING the i-th of n test clips starts at
``i * floor(delta / (n - 1))`` (``floor(delta / 2)`` when n = 1), otherwise at ``delta * i / n``; the frames are
``floor(start + k * (clip - 1) / (T - 1))`` for k = 0..T-1, clamped to ``N - 1``.
transform.uniform_crop: the short side is centered at ``ceil((S - crop) / 2)``; the long side is cropped at
0, ``ceil((L - crop) / 2)`` or ``L - crop`` for spatial index 0, 1, 2.
"""

import random

import pytest
import torch

from projects.video.data.sampling import (
    clip_frame_indices,
    eval_short_side,
    get_start_end_idx,
    short_side_size,
    uniform_crop_offsets,
    view_indices,
)

# 16 frames over a 64-frame span: floor(k * 63 / 15) = floor(4.2 k).
SPAN_64_T16 = [0, 4, 8, 12, 16, 21, 25, 29, 33, 37, 42, 46, 50, 54, 58, 63]


@pytest.mark.parametrize("clip_idx, start", [(0, 0), (1, 59), (2, 118), (3, 177), (4, 236)])
def test_offset_sampling_16x4_300_frames(clip_idx, start):
    # 300 frames at 30 fps, 16 x 4: clip 64, delta 236, 5 clips -> starts i * floor(236 / 4) = 59 i.
    indices = clip_frame_indices(300, 16, 4, 30.0, 30.0, clip_idx, 5, use_offset=True)
    assert indices.tolist() == [start + k for k in SPAN_64_T16]


def test_offset_sampling_single_clip_is_centered():
    # One clip: start floor(236 / 2) = 118.
    assert get_start_end_idx(300, 64, 0, 1, use_offset=True) == (118, 181)


@pytest.mark.parametrize(
    "clip_idx, expected",
    [
        (0, [0, 9, 18, 27, 36, 45, 54, 63]),
        (1, [47, 56, 65, 74, 83, 92, 101, 110]),  # start 236 * 1 / 5 = 47.2
        (3, [141, 150, 159, 168, 177, 186, 195, 204]),  # start 141.6
    ],
)
def test_uniform_sampling_without_offset_8x8(clip_idx, expected):
    # 8 x 8 at 30 fps: clip 64 frames, frames every 63 / 7 = 9; starts delta * i / n with delta 236, n 5.
    indices = clip_frame_indices(300, 8, 8, 30.0, 30.0, clip_idx, 5, use_offset=False)
    assert indices.tolist() == expected


def test_video_fps_differs_from_target_fps():
    # 25 fps video of 250 frames, 16 x 4 at 30 fps: clip 16 * 4 * 25 / 30 = 53.33 frames,
    # delta 196.67 -> offset starts i * floor(196.67 / 4) = 49 i; frames floor(start + k * 52.33 / 15).
    offsets = [0, 3, 6, 10, 13, 17, 20, 24, 27, 31, 34, 38, 41, 45, 48, 52]
    for clip_idx in range(5):
        indices = clip_frame_indices(250, 16, 4, 25.0, 30.0, clip_idx, 5, use_offset=True)
        assert indices.tolist() == [49 * clip_idx + o for o in offsets]
    # A 60 fps video takes every other frame or so: clip 128 frames, step 127 / 15 = 8.47.
    indices = clip_frame_indices(600, 16, 4, 60.0, 30.0, 0, 5, use_offset=True)
    assert indices.tolist() == [0, 8, 16, 25, 33, 42, 50, 59, 67, 76, 84, 93, 101, 110, 118, 127]


def test_short_video_repeats_its_last_frame():
    # 40 frames < 64-frame clip: delta 0, every clip starts at 0, indices past 39 clamp to 39.
    expected = [0, 4, 8, 12, 16, 21, 25, 29, 33, 37, 39, 39, 39, 39, 39, 39]
    for clip_idx in (-1, 0, 2, 4):
        assert clip_frame_indices(40, 16, 4, 30.0, 30.0, clip_idx, 5).tolist() == expected
    assert clip_frame_indices(1, 8, 2, 30.0, 30.0, -1, 1).tolist() == [0] * 8


def test_random_training_clip_stays_inside_the_video():
    random.seed(0)
    starts = set()
    for _ in range(200):
        indices = clip_frame_indices(100, 16, 4, 30.0, 30.0, -1, 1)
        start = indices[0].item()
        assert 0 <= start <= 36 and indices[-1].item() <= 99  # delta = 100 - 64
        assert (indices[-1] - indices[0]).item() in (62, 63, 64)  # span 63 from a fractional start (float32)
        starts.add(start)
    assert len(starts) > 20  # the start is really random


@pytest.mark.parametrize(
    "height, width, size, expected",
    [
        (256, 340, 256, (256, 340)),  # already at size: untouched
        (240, 320, 256, (256, 341)),  # floor(320 / 240 * 256) = 341
        (320, 180, 224, (398, 224)),  # portrait: floor(320 / 180 * 224) = 398
        (720, 1280, 312, (312, 554)),  # floor(1280 / 720 * 312) = 554.67 -> 554
    ],
)
def test_short_side_size(height, width, size, expected):
    assert short_side_size(height, width, size) == expected


@pytest.mark.parametrize(
    "height, width, size, offsets",
    [
        (256, 341, 224, [(16, 0), (16, 59), (16, 117)]),  # landscape: left / ceil(117 / 2) / right
        (398, 224, 224, [(0, 0), (87, 0), (174, 0)]),  # portrait: top / middle / bottom
        (256, 256, 224, [(16, 0), (16, 16), (16, 32)]),  # square counts as landscape
        (312, 554, 312, [(0, 0), (0, 121), (0, 242)]),  # L: 3 crops of 312 at short side 312
    ],
)
def test_uniform_crop_offsets(height, width, size, offsets):
    assert [uniform_crop_offsets(height, width, size, i) for i in range(3)] == offsets


def test_views_are_clip_major_and_single_crop_is_centered():
    assert [view_indices(v, 3) for v in range(6)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert [view_indices(v, 1) for v in range(3)] == [(0, 1), (1, 1), (2, 1)]


def test_eval_short_side_follows_pyslowfast():
    assert eval_short_side(0, [256, 320], 224, num_crops=1) == 256  # S / B: 1 crop at 256
    assert eval_short_side(0, [356, 446], 312, num_crops=3) == 312  # L: 3 crops at 312
    assert eval_short_side(288, [256, 320], 224, num_crops=3) == 288  # explicit DATA.TEST_SHORT_SIDE


def test_indices_are_int64_tensors():
    indices = clip_frame_indices(300, 16, 4, 30.0, 30.0, 0, 5)
    assert indices.dtype == torch.int64 and indices.shape == (16,)
