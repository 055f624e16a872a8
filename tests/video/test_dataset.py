"""Kinetics csv loading, decoded clips, test views and unreadable videos."""

import logging
import os
import shutil

import av
import numpy as np
import pytest
import torch

from mvit.config import load_config
from projects.video.config import add_video_config
from projects.video.data import Kinetics, VideoDecodeError, VideoReader, read_video_csv
from projects.video.tools.make_motion_dataset import write_mp4


def _cfg(data_dir: str, *opts) -> object:
    base = [
        "DATA.PATH_TO_DATA_DIR", data_dir,
        "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2",
        "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "DATA.TRAIN_CROP_SIZE", "24", "DATA.TEST_CROP_SIZE", "32",
        "MODEL.NUM_CLASSES", "6", "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "3",
    ]  # fmt: skip
    return load_config(None, base + list(opts), extensions=[add_video_config])


def _counter_video(path: str, num_frames: int, fps: int = 30, size: int = 32) -> None:
    """A video whose frame i is uniformly gray level 8 * i (readable back through H.264 to +-2)."""
    frames = np.stack([np.full((size, size, 3), 8 * i, np.uint8) for i in range(num_frames)])
    write_mp4(path, frames, fps)


def test_read_video_csv(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("a.mp4 3\n\nsub dir/b c.mp4 0\n/abs/c.mp4 1\n")
    paths, labels = read_video_csv(str(csv))
    assert paths == [str(tmp_path / "a.mp4"), str(tmp_path / "sub dir/b c.mp4"), "/abs/c.mp4"]
    assert labels == [3, 0, 1]
    paths, _ = read_video_csv(str(csv), prefix="/data/k400")
    assert paths[0] == "/data/k400/a.mp4"
    csv.write_text("a.mp4,3\n")
    assert read_video_csv(str(csv), separator=",")[1] == [3]


@pytest.mark.parametrize(
    "content, message",
    [("a.mp4\n", "train.csv:1: expected"), ("a.mp4 x\n", "train.csv:1: label 'x'"), ("\n\n", "no videos listed")],
)
def test_read_video_csv_errors_name_file_and_line(tmp_path, content, message):
    (tmp_path / "train.csv").write_text(content)
    with pytest.raises(ValueError, match=message):
        read_video_csv(str(tmp_path / "train.csv"))


def test_missing_csv_and_label_out_of_range(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.csv"):
        Kinetics.from_config(_cfg(str(tmp_path)), "train")
    (tmp_path / "train.csv").write_text("a.mp4 6\n")
    with pytest.raises(ValueError, match="label 6 >= MODEL.NUM_CLASSES=6"):
        Kinetics.from_config(_cfg(str(tmp_path)), "train")


def test_reader_picks_the_requested_frames(tmp_path):
    path = str(tmp_path / "counter.mp4")
    _counter_video(path, 20)
    with VideoReader(path) as video:
        assert video.num_frames == 20 and video.fps == 30
        frames = video.get_frames(torch.tensor([3, 3, 7, 19]))
    assert frames.shape == (4, 3, 32, 32) and frames.dtype == torch.uint8
    levels = frames.float().mean((1, 2, 3))
    assert torch.allclose(levels, torch.tensor([24.0, 24.0, 56.0, 152.0]), atol=3)


def test_train_items_and_repeated_augmentation(motion_dir):
    dataset = Kinetics.from_config(_cfg(motion_dir, "AUG.NUM_SAMPLE", "2"), "train")
    assert len(dataset) == 36 and dataset.num_samples == 2
    clips, label, index = dataset[7]
    assert isinstance(clips, list) and [c.shape for c in clips] == [(3, 4, 24, 24)] * 2  # one decoded clip,
    assert not torch.equal(clips[0], clips[1])  # two augmentations
    assert (label, index) == (7 % 6, 7)


def test_test_items_are_the_views_of_each_video(motion_dir):
    dataset = Kinetics.from_config(_cfg(motion_dir), "test")
    assert dataset.num_views == 6 and len(dataset) == 12 * 6
    clip, label, index = dataset[6 * 5 + 4]  # video 5, view 4 = clip 1, right crop
    assert clip.shape == (3, 4, 32, 32)
    assert (label, index) == (5, 6 * 5 + 4)
    again = dataset[6 * 5 + 4][0]
    assert torch.equal(clip, again)  # test views are deterministic


def test_test_views_sample_pyslowfast_frames(tmp_path):
    # 20 frames, 4 x 2 at 30 fps: clip 8, delta 12; 2 offset clips start at 0 and 12 -> frames
    # floor(k * 7 / 3) = 0, 2, 4, 7 and 12, 14, 16, 19.
    _counter_video(str(tmp_path / "v.mp4"), 20)
    (tmp_path / "test.csv").write_text("v.mp4 0\n")
    dataset = Kinetics.from_config(_cfg(str(tmp_path), "TEST.NUM_SPATIAL_CROPS", "1"), "test")
    for view, frames in ((0, [0, 2, 4, 7]), (1, [12, 14, 16, 19])):
        clip = dataset[view][0]  # (C, T, H, W), normalised with the core default ImageNet mean / std
        level = (clip[0].mean((1, 2)) * 0.229 + 0.485) * 255
        assert torch.allclose(level, 8.0 * torch.tensor(frames), atol=3), (view, level)


def test_short_video_repeats_the_last_frame(tmp_path):
    _counter_video(str(tmp_path / "short.mp4"), 3)
    (tmp_path / "test.csv").write_text("short.mp4 0\n")
    dataset = Kinetics.from_config(_cfg(str(tmp_path), "DATA.NUM_FRAMES", "6", "TEST.NUM_SPATIAL_CROPS", "1"), "test")
    level = (dataset[0][0][0].mean((1, 2)) * 0.229 + 0.485) * 255
    # clip of 12 frames over 3: floor(k * 11 / 5) = 0, 2, 4, 6, 8, 11 clamped to 2.
    assert torch.allclose(level, torch.tensor([0.0, 16, 16, 16, 16, 16]), atol=3)


def _make_corrupt_set(root: str, motion_dir: str) -> list:
    """Three readable clips and three unreadable files named .mp4; returns the bad paths."""
    os.makedirs(root, exist_ok=True)
    for i in range(3):
        shutil.copy(os.path.join(motion_dir, "train", f"{i:05d}.mp4"), os.path.join(root, f"good{i}.mp4"))
    data = open(os.path.join(motion_dir, "train", "00003.mp4"), "rb").read()
    bad = {"truncated.mp4": data[: len(data) // 2], "empty.mp4": b"", "text.mp4": b"this is not a video\n"}
    for name, content in bad.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(content)
    rows = [f"good{i}.mp4 {i}" for i in range(3)] + [f"{name} 4" for name in bad]
    for split in ("train", "test"):
        with open(os.path.join(root, f"{split}.csv"), "w") as f:
            f.write("\n".join(rows) + "\n")
    return [os.path.join(root, name) for name in bad]


@pytest.mark.parametrize("name", ["truncated.mp4", "empty.mp4", "text.mp4"])
def test_reader_names_the_unreadable_file(tmp_path, motion_dir, name):
    bad = dict(zip(["truncated.mp4", "empty.mp4", "text.mp4"], _make_corrupt_set(str(tmp_path), motion_dir)))
    with pytest.raises(VideoDecodeError, match=name):
        VideoReader(bad[name]).get_frames(torch.arange(4))


def test_unreadable_videos_are_logged_and_replaced(tmp_path, motion_dir, caplog):
    bad = _make_corrupt_set(str(tmp_path), motion_dir)
    caplog.set_level(logging.WARNING)
    train = Kinetics.from_config(_cfg(str(tmp_path)), "train")
    items = [train[i] for i in range(len(train))]  # a whole epoch, never raising
    assert all(index < 3 and label == index for _, label, index in items)
    test = Kinetics.from_config(_cfg(str(tmp_path)), "test")
    for i in range(len(test)):
        _, label, index = test[i]
        video, view = divmod(index, test.num_views)
        assert video < 3 and label == video and view == i % test.num_views  # same view of a readable video
    for path in bad:
        assert path in caplog.text


def test_all_videos_unreadable_is_one_clear_error(tmp_path):
    (tmp_path / "x.mp4").write_text("nope")
    (tmp_path / "train.csv").write_text("x.mp4 0\n")
    dataset = Kinetics.from_config(_cfg(str(tmp_path), "DATA.NUM_RETRIES", "3"), "train")
    with pytest.raises(RuntimeError, match="3 videos in a row could not be decoded"):
        dataset[0]


def test_decoded_frames_match_pyav(motion_dir):
    path = os.path.join(motion_dir, "val", "00004.mp4")
    reference = np.stack([f.to_rgb().to_ndarray() for f in av.open(path).decode(video=0)])
    with VideoReader(path) as video:
        frames = video.get_frames(torch.tensor([1, 5, 30, 31])).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(frames, reference[[1, 5, 30, 31]])


@pytest.mark.parametrize(
    "name, frames, rate, short_side, crops",
    [("MVITv2_S_16x4", 16, 4, 256, 1), ("MVITv2_B_32x3", 32, 3, 256, 1), ("MVITv2_L_40x3", 40, 3, 312, 3)],
)
def test_k400_configs_build_pyslowfast_views(tmp_path, name, frames, rate, short_side, crops):
    (tmp_path / "test.csv").write_text("a.mp4 0\nb.mp4 399\n")
    cfg_file = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "K400", f"{name}.yaml")
    cfg = load_config(cfg_file, ["DATA.PATH_TO_DATA_DIR", str(tmp_path)], extensions=[add_video_config])
    dataset = Kinetics.from_config(cfg, "test")
    assert (dataset.sampling.num_frames, dataset.sampling.sampling_rate, dataset.sampling.use_offset) == (
        frames,
        rate,
        True,
    )
    assert dataset.eval_transform.short_side == short_side and dataset.num_views == 5 * crops
    assert len(dataset) == 2 * 5 * crops and len(dataset.classes) == 400 and dataset.classes[0] == "abseiling"
