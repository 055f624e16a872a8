"""The generated motion data set: real mp4 files in Kinetics layout, deterministic by seed, balanced."""

import os

import numpy as np
import torch

from projects.video.data import VideoReader, read_video_csv
from projects.video.tools.make_motion_dataset import CLASSES, make_motion_dataset


def _frames(path: str) -> np.ndarray:
    with VideoReader(path) as video:
        return video.get_frames(torch.arange(video.num_frames)).numpy()


def test_layout_and_balance(motion_dir):
    paths, labels = read_video_csv(os.path.join(motion_dir, "train.csv"))
    assert len(paths) == 36 and np.bincount(labels).tolist() == [6] * len(CLASSES)
    assert read_video_csv(os.path.join(motion_dir, "test.csv")) == read_video_csv(os.path.join(motion_dir, "val.csv"))
    with open(os.path.join(motion_dir, "classes.txt")) as f:
        assert [line.strip() for line in f] == list(CLASSES)
    with VideoReader(paths[0]) as video:
        assert (video.num_frames, video.fps) == (32, 30)
    assert _frames(paths[0]).shape == (32, 3, 32, 32)


def test_same_seed_same_frames(tmp_path):
    a, b, c = (str(tmp_path / name) for name in "abc")
    make_motion_dataset(a, num_train=3, num_val=1, seed=7, progress=False)
    make_motion_dataset(b, num_train=3, num_val=1, seed=7, progress=False)
    make_motion_dataset(c, num_train=3, num_val=1, seed=8, progress=False)
    for name in ("train.csv", "val.csv", "train/00000.mp4", "train/00002.mp4", "val/00000.mp4"):
        with open(os.path.join(a, name), "rb") as fa, open(os.path.join(b, name), "rb") as fb:
            assert fa.read() == fb.read(), name  # the same bytes, not only the same frames
    for name in ("train/00000.mp4", "val/00000.mp4"):
        assert not np.array_equal(_frames(os.path.join(a, name)), _frames(os.path.join(c, name)))


def test_shapes_move_as_labelled(tmp_path):
    # The centroid of the bright shape moves right for "right" and down for "down" (no wrap in 4 frames).
    from projects.video.tools.make_motion_dataset import render_clip

    for label, axis, sign in ((0, 1, 1), (1, 1, -1), (2, 0, -1), (3, 0, 1)):
        rng = np.random.default_rng(label)
        frames = render_clip(label, rng, size=32, num_frames=32).astype(np.float32).mean(-1)
        steps = []
        for t in range(0, 28, 4):
            mask_a, mask_b = frames[t] > 140, frames[t + 4] > 140
            if not (mask_a.any() and mask_b.any()):
                continue
            ca, cb = np.argwhere(mask_a).mean(0), np.argwhere(mask_b).mean(0)
            if abs(cb[axis] - ca[axis]) < 8:  # skip steps where the shape wraps around the border
                steps.append(np.sign(cb[axis] - ca[axis]))
        assert steps and np.mean(np.array(steps) == sign) > 0.7, (CLASSES[label], steps)
