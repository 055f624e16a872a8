"""Bad video data: csv mistakes stop at once with one line naming file and line; unreadable clips are logged,
counted and replaced; an epoch with too many of them stops; odd but valid clips load like the others."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mvit.config import load_config
from mvit.data.loader import collate_items
from mvit.errors import ConfigError, DataError
from projects.video.config import add_video_config
from projects.video.data import DecodeStats, Kinetics, VideoDecodeError, read_video_csv
from projects.video.data.sampling import clip_frame_indices
from projects.video.hooks import FailedItemsCheck
from projects.video.tools.make_motion_dataset import render_clip, write_mp4

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(ROOT, "configs", "DEMO", "video_motion.yaml")
# One epoch of the demo model made tiny, no evaluation: seconds on one CPU thread.
TINY = [
    "SOLVER.MAX_EPOCH", "1", "TRAIN.BATCH_SIZE", "8", "TEST.BATCH_SIZE", "8", "TRAIN.EVAL_PERIOD", "0",
    "TEST.ENABLE", "False", "TRAIN.TENSORBOARD", "False", "MVIT.EMBED_DIM", "16", "DATA_LOADER.NUM_WORKERS", "0",
]  # fmt: skip
BAD_KINDS = ("missing", "random_bytes", "truncated", "truncated_middle", "zero_frames", "audio_only")


def _tool(script: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, os.path.join(ROOT, "tools", script), *args]
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _run_net(data_dir: str, out: str, *opts: str) -> subprocess.CompletedProcess:
    return _tool("run_net.py", "--cfg", CONFIG, *TINY, "DATA.PATH_TO_DATA_DIR", data_dir, "OUTPUT_DIR", out, *opts)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The error line of a run that failed on bad input (exit 2, one line on stderr, no traceback)."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


def _cfg(data_dir: str, *opts: str):
    base = [
        "DATA.PATH_TO_DATA_DIR", data_dir, "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2",
        "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "DATA.TRAIN_CROP_SIZE", "24", "DATA.TEST_CROP_SIZE", "32",
        "MODEL.NUM_CLASSES", "6", "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "1",
    ]  # fmt: skip
    return load_config(None, base + list(opts), extensions=[add_video_config])


def _write_audio_only(path: str) -> None:
    """An mp4 with one AAC audio stream and no video stream."""
    with av.open(path, "w") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_zero_frames(path: str) -> None:
    """An mp4 container with an H.264 stream header and no frame."""
    container = av.open(path, "w")
    stream = container.add_stream("libx264", rate=30)
    stream.height = stream.width = 32
    stream.pix_fmt = "yuv420p"
    container.start_encoding()
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def _write_index_first(path: str, frames: np.ndarray) -> None:
    """An mp4 with its index before the frames (``faststart``): a truncated copy still opens."""
    with av.open(path, "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_bad_clip(folder: str, kind: str, good: str) -> str:
    """Write one unusable clip of ``kind`` (see ``BAD_KINDS``) in ``folder``; ``good`` is a readable mp4."""
    path = os.path.join(folder, f"bad_{kind}.mp4")
    data = open(good, "rb").read()
    if kind == "random_bytes":
        open(path, "wb").write(np.random.default_rng(0).bytes(4000))
    elif kind == "truncated":  # index at the end (PyAV's default): cut, the file does not open
        open(path, "wb").write(data[: len(data) // 2])
    elif kind == "truncated_middle":  # index first: opens, its frames fail to decode
        whole = os.path.join(folder, "whole.mp4")
        _write_index_first(whole, render_clip(0, np.random.default_rng(0), 32, 32))
        data = open(whole, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
        os.remove(whole)
    elif kind == "zero_frames":
        _write_zero_frames(path)
    elif kind == "audio_only":
        _write_audio_only(path)
    else:
        assert kind == "missing"  # listed in the csv, never written
    return path


def _write_csv(path: str, rows) -> None:
    with open(path, "w") as f:
        f.writelines(f"{video} {label}\n" for video, label in rows)


def _data_dir(root, motion_dir: str, num_good: int, bad: dict) -> str:
    """``train.csv`` of ``num_good`` motion clips then ``bad[kind]`` unusable clips of each kind (label 0)."""
    root = str(root)
    os.makedirs(root, exist_ok=True)
    good = [(os.path.join(motion_dir, "train", f"{i:05d}.mp4"), i % 6) for i in range(num_good)]
    rows = list(good)
    for kind, count in bad.items():
        for i in range(count):
            sub = os.path.join(root, f"{kind}{i}")
            os.makedirs(sub, exist_ok=True)
            rows.append((make_bad_clip(sub, kind, good[0][0]), 0))
    _write_csv(os.path.join(root, "train.csv"), rows)
    shutil.copy(os.path.join(motion_dir, "classes.txt"), root)
    return root


# ---------------------------------------------------------------- csv files: one line naming file and line


@pytest.mark.parametrize("case", ["missing_train", "missing_val", "malformed_row", "label_too_large", "empty"])
def test_csv_mistakes_stop_run_net_with_one_line(case, motion_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = "".join(f"{motion_dir}/train/{i:05d}.mp4 {i % 6}\n" for i in range(8))
    (data / "train.csv").write_text(rows)
    (data / "val.csv").write_text(rows)
    expected = {
        "missing_train": "train.csv: video list not found",
        "missing_val": "val.csv: video list not found",
        "malformed_row": "train.csv:3: expected '<path> <label>'",
        "label_too_large": "train.csv:2: label 6 >= MODEL.NUM_CLASSES=6",
        "empty": "train.csv: no videos listed",
    }[case]
    if case.startswith("missing"):
        (data / f"{case.split('_')[1]}.csv").unlink()
    elif case == "malformed_row":
        lines = rows.splitlines(keepends=True)
        (data / "train.csv").write_text("".join(lines[:2]) + "just/a/path.mp4\n" + "".join(lines[2:]))
    elif case == "label_too_large":
        (data / "train.csv").write_text(f"{motion_dir}/train/00000.mp4 0\n{motion_dir}/train/00001.mp4 6\n")
    else:
        (data / "train.csv").write_text("\n  \n")
    line = _one_line_error(_run_net(str(data), str(tmp_path / "out"), "TRAIN.EVAL_PERIOD", "1"))
    assert expected in line and str(data) in line, line


def test_csv_that_is_not_text_names_the_line(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"a.mp4 1\n\xff\xd8\xff\xe0 binary\n")
    with pytest.raises(DataError, match=r"train.csv:2: not UTF-8 text"):
        read_video_csv(str(tmp_path / "train.csv"))
    (tmp_path / "test.csv").mkdir()
    with pytest.raises(DataError, match="test.csv: cannot read"):
        read_video_csv(str(tmp_path / "test.csv"))


def test_class_names_that_do_not_match_num_classes_name_the_file(motion_dir, tmp_path):
    (tmp_path / "classes.txt").write_text("a\nb\n")
    (tmp_path / "train.csv").write_text(f"{motion_dir}/train/00000.mp4 0\n")
    with pytest.raises(DataError, match=f"^{tmp_path / 'classes.txt'}: 2 class names but MODEL.NUM_CLASSES=6"):
        Kinetics.from_config(_cfg(str(tmp_path)), "train")


# ---------------------------------------------------------------- unusable clips: logged, counted, replaced


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_unusable_clip_is_logged_counted_and_replaced(kind, motion_dir, tmp_path, caplog):
    data = _data_dir(tmp_path / "data", motion_dir, 3, {kind: 1})
    bad = read_video_csv(os.path.join(data, "train.csv"))[0][3]
    shutil.copy(os.path.join(data, "train.csv"), os.path.join(data, "test.csv"))
    caplog.set_level(logging.WARNING)
    train = Kinetics.from_config(_cfg(data), "train")
    clip, label, index = train[3]
    assert index != 3 and label == index % 6 and clip.shape == (3, 4, 24, 24)  # another video's clip
    assert bad in caplog.text
    assert train.stats.totals().tolist() == [1, 1]  # one item, replaced
    test = Kinetics.from_config(_cfg(data), "test")
    for view in range(2):  # the same view of the next video (wrapping around to video 0)
        assert test[3 * 2 + view][2] == view


def test_short_odd_sized_and_other_frame_rate_clips_load_like_the_others(motion_dir, tmp_path, caplog):
    counter = np.stack([np.full((48, 64, 3), 8 * i, np.uint8) for i in range(30)])
    write_mp4(str(tmp_path / "fps15_48x64.mp4"), counter, fps=15)  # 2 s at 15 fps, landscape 48x64
    write_mp4(str(tmp_path / "short.mp4"), render_clip(1, np.random.default_rng(0), 32, 3))  # 3 frames < 1 clip
    write_mp4(str(tmp_path / "fps60.mp4"), render_clip(2, np.random.default_rng(1), 32, 64), fps=60)
    rows = [(os.path.join(motion_dir, "train", "00000.mp4"), 0), ("fps15_48x64.mp4", 1), ("short.mp4", 2)]
    _write_csv(str(tmp_path / "train.csv"), rows + [("fps60.mp4", 3)])
    _write_csv(str(tmp_path / "test.csv"), rows + [("fps60.mp4", 3)])
    caplog.set_level(logging.WARNING)
    train = Kinetics.from_config(_cfg(str(tmp_path)), "train")
    inputs, labels, indices = collate_items([train[i] for i in range(4)])
    assert inputs.shape == (4, 3, 4, 24, 24) and indices.tolist() == [0, 1, 2, 3] == labels.tolist()
    test = Kinetics.from_config(_cfg(str(tmp_path)), "test")
    assert collate_items([test[i] for i in range(8)])[0].shape == (8, 3, 4, 32, 32)
    assert train.stats.totals().tolist() == [4, 0] and "unreadable" not in caplog.text
    # The 15 fps file is sampled on its own time line: frame k at 30 fps is its frame k / 2.
    expected = clip_frame_indices(30, 4, 2, 15.0, 30.0, 0, 2, True)
    level = (test[2][0][0].mean((1, 2)) * 0.229 + 0.485) * 255  # view 0 of video 1, core mean / std
    assert torch.allclose(level, 8.0 * expected.float(), atol=3), (level, expected)


def test_counts_from_loader_workers_reach_the_main_process(motion_dir, tmp_path):
    data = _data_dir(tmp_path / "data", motion_dir, 6, {"random_bytes": 2, "missing": 1})
    train = Kinetics.from_config(_cfg(data), "train")
    loader = DataLoader(train, batch_size=3, num_workers=2, collate_fn=collate_items)
    assert sum(len(batch[1]) for batch in loader) == 9
    assert train.stats.totals().tolist() == [9, 3]


def test_a_video_list_without_one_readable_video_is_one_line_from_a_worker(tmp_path):
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_text("not a video")
    _write_csv(str(tmp_path / "train.csv"), [("a.mp4", 0), ("b.mp4", 1)])
    train = Kinetics.from_config(_cfg(str(tmp_path), "DATA.NUM_RETRIES", "2"), "train")
    with pytest.raises(VideoDecodeError) as info:
        next(iter(DataLoader(train, batch_size=2, num_workers=1, collate_fn=collate_items)))
    message = str(info.value)
    assert "\n" not in message and message.startswith("2 videos in a row could not be decoded (last: "), message


# ---------------------------------------------------------------- the share of failed items in an epoch


class _Trainer(SimpleNamespace):
    """What FailedItemsCheck reads of the trainer: the position and the items per step."""


def _check(max_fraction: float, items_per_step: int = 10, steps: int = 10):
    stats = DecodeStats()
    hook = FailedItemsCheck(stats, max_fraction, "/data/train.csv")
    hook.trainer = _Trainer(epoch=0, iter=0, iters_per_epoch=steps, accum_steps=1, items_per_batch=items_per_step)
    hook.before_train()
    hook.before_epoch()
    return stats, hook


def _load(stats: DecodeStats, good: int, bad: int) -> None:
    for failed in [False] * good + [True] * bad:
        stats.record(failed)


def test_an_epoch_at_the_limit_finishes_and_logs_the_count(caplog):
    caplog.set_level(logging.WARNING)
    stats, hook = _check(0.1)
    for _ in range(10):
        _load(stats, 9, 1)
        hook.after_step()
    hook.after_epoch()  # 10 of 100: not more than 10 %
    assert "epoch 1: 10 of 100 training items (10.0%) had an unreadable video" in caplog.text
    hook.trainer.epoch = 1
    hook.before_epoch()
    _load(stats, 100, 0)
    hook.after_epoch()  # counted per epoch: the first epoch's failures do not carry over


def test_an_epoch_over_the_limit_stops_at_its_end():
    stats, hook = _check(0.1)
    _load(stats, 89, 11)
    with pytest.raises(DataError, match=r"^/data/train.csv: 11 of the 100 training items of epoch 1 could not be"):
        hook.after_epoch()


def test_an_epoch_stops_as_soon_as_the_limit_is_certain():
    stats, hook = _check(0.1)
    _load(stats, 0, 10)
    hook.after_step()  # 10 failed: the epoch may still end at 10 of 100
    _load(stats, 0, 1)
    with pytest.raises(DataError, match="already 11 of the 100 training items of epoch 1 failed"):
        hook.after_step()
    stats, hook = _check(1.0)
    _load(stats, 0, 100)
    hook.after_step()
    hook.after_epoch()  # 1 = never stop


def test_max_failed_fraction_is_a_config_key(motion_dir):
    assert _cfg(motion_dir).DATA.MAX_FAILED_FRACTION == 0.1
    train = Kinetics.from_config(_cfg(motion_dir, "DATA.MAX_FAILED_FRACTION", "0.25"), "train")
    (hook,) = train.train_hooks()
    assert hook.max_fraction == 0.25 and hook.source == os.path.join(motion_dir, "train.csv")
    assert Kinetics.from_config(_cfg(motion_dir), "val").train_hooks() == []
    with pytest.raises(ConfigError, match="DATA.MAX_FAILED_FRACTION"):
        Kinetics.from_config(_cfg(motion_dir, "DATA.MAX_FAILED_FRACTION", "-0.5"), "train")


def test_run_net_counts_replaced_items_over_workers_and_finishes(motion_dir, tmp_path):
    data = _data_dir(tmp_path / "data", motion_dir, 30, {"random_bytes": 1, "missing": 1})  # 2 of 32
    out = tmp_path / "out"
    proc = _run_net(data, str(out), "DATA_LOADER.NUM_WORKERS", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "epoch 1: 2 of 32 training items (6.2%) had an unreadable video" in log
    assert (out / "checkpoints" / "last.pyth").is_file()


def test_run_net_stops_an_epoch_with_too_many_unreadable_clips(motion_dir, tmp_path):
    data = _data_dir(tmp_path / "data", motion_dir, 24, {"random_bytes": 4, "truncated": 4})  # 8 of 32
    out = tmp_path / "out"
    line = _one_line_error(_run_net(data, str(out), "DATA_LOADER.NUM_WORKERS", "2"))
    assert os.path.join(data, "train.csv") in line and "of the 32 training items of epoch 1" in line, line
    assert "DATA.MAX_FAILED_FRACTION=0.1" in line
    assert not (out / "checkpoints" / "last.pyth").exists()  # the epoch is not saved
    log = (out / "log.txt").read_text()
    assert os.path.join(data, "random_bytes0", "bad_random_bytes.mp4") in log  # each file is named


def test_run_net_without_one_readable_video_is_one_line(tmp_path):
    for i in range(8):
        (tmp_path / f"{i}.mp4").write_bytes(b"\x00" * 100)
    _write_csv(str(tmp_path / "train.csv"), [(f"{i}.mp4", 0) for i in range(8)])
    line = _one_line_error(_run_net(str(tmp_path), str(tmp_path / "out"), "DATA_LOADER.NUM_WORKERS", "1"))
    assert "videos in a row could not be decoded (last: " in line and str(tmp_path) in line, line


# ---------------------------------------------------------------- prediction inputs


@pytest.fixture(scope="module")
def video_checkpoint(tmp_path_factory) -> str:
    from mvit import create_model
    from mvit.checkpoint import save_weights

    cfg = load_config(CONFIG, ["MVIT.EMBED_DIM", "16"], extensions=[add_video_config])
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.pyth")
    save_weights(create_model(cfg), path)
    return path


@pytest.mark.parametrize("case", ["not_a_video", "audio_only", "missing"])
def test_predict_names_a_file_that_is_not_a_video(case, video_checkpoint, tmp_path):
    path = tmp_path / f"{case}.mp4"
    if case == "not_a_video":
        path.write_text("a text file named .mp4\n")
    elif case == "audio_only":
        _write_audio_only(str(path))
    proc = _tool(
        "predict.py", "--cfg", CONFIG, "--checkpoint", video_checkpoint, str(path), "--opts", "MVIT.EMBED_DIM", "16"
    )
    line = _one_line_error(proc)
    assert str(path) in line, line
