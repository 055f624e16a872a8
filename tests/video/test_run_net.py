"""tools/run_net.py trains and tests a tiny video MViTv2 on generated mp4 files, in 1 and 2 processes."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(ROOT, "configs", "DEMO", "video_motion.yaml")
TINY = [
    "SOLVER.MAX_EPOCH", "1", "TRAIN.BATCH_SIZE", "8", "TEST.BATCH_SIZE", "8", "TRAIN.EVAL_PERIOD", "1",
    "TRAIN.TENSORBOARD", "False", "MVIT.EMBED_DIM", "16", "DATA_LOADER.NUM_WORKERS", "0",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_net(*opts: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, os.path.join(ROOT, "tools", "run_net.py"), "--cfg", CONFIG, *TINY, *opts]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _test_record(output_dir: str) -> dict:
    with open(os.path.join(output_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return [r for r in records if r.get("split") == "test"][-1]


def test_train_and_test_in_one_process(motion_dir, tmp_path):
    out = str(tmp_path / "run")
    run_net("DATA.PATH_TO_DATA_DIR", motion_dir, "OUTPUT_DIR", out)
    record = _test_record(out)
    assert record["num_samples"] == 12  # 12 test videos, each the sum of its 2 views
    saved = np.load(os.path.join(out, "test_view_scores.npz"))
    # The reported top-1 / top-5 are those of the saved video scores against the csv's labels.
    with open(os.path.join(motion_dir, "test.csv")) as f:
        labels = np.array([int(line.rsplit(" ", 1)[1]) for line in f if line.strip()])
    ranked = np.argsort(-saved["video_scores"], axis=1)
    assert record["top1"] == pytest.approx(100.0 * np.mean(ranked[:, 0] == labels))
    assert record["top5"] == pytest.approx(100.0 * np.mean((ranked[:, :5] == labels[:, None]).any(1)))
    assert saved["view_scores"].shape == (12, 2, 6) and not np.isnan(saved["view_scores"]).any()
    assert np.allclose(saved["view_scores"].sum(-1), 1.0, atol=1e-5)  # softmax scores per view
    assert np.allclose(saved["video_scores"], saved["view_scores"].sum(1), atol=1e-5)
    assert os.path.isfile(os.path.join(out, "checkpoints", "last.pyth"))
    assert os.path.isfile(os.path.join(out, "curves.png"))


def test_two_process_ddp_matches_a_one_process_test(motion_dir, tmp_path):
    out = str(tmp_path / "ddp")
    port = _free_port()
    run_net(
        "DATA.PATH_TO_DATA_DIR",
        motion_dir,
        "OUTPUT_DIR",
        out,
        "NUM_GPUS",
        "2",
        "INIT_METHOD",
        f"tcp://127.0.0.1:{port}",
    )
    ddp = _test_record(out)
    ddp_scores = np.load(os.path.join(out, "test_view_scores.npz"))["view_scores"]
    assert ddp["num_samples"] == 12 and not np.isnan(ddp_scores).any()  # every view of every video, once

    # The same weights tested by one process: views gathered from 2 ranks aggregate to the same numbers.
    single = str(tmp_path / "single")
    checkpoint = os.path.join(out, "checkpoints", "last.pyth")
    run_net(
        "DATA.PATH_TO_DATA_DIR",
        motion_dir,
        "OUTPUT_DIR",
        single,
        "TRAIN.ENABLE",
        "False",
        "TEST.CHECKPOINT_FILE_PATH",
        checkpoint,
    )
    one = _test_record(single)
    assert one["top1"] == pytest.approx(ddp["top1"]) and one["top5"] == pytest.approx(ddp["top5"])
    single_scores = np.load(os.path.join(single, "test_view_scores.npz"))["view_scores"]
    assert np.allclose(single_scores, ddp_scores, atol=1e-5)


def test_corrupt_videos_do_not_stop_an_epoch(motion_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(motion_dir, data)
    good = (data / "train" / "00000.mp4").read_bytes()
    bad = {"truncated.mp4": good[: len(good) // 3], "empty.mp4": b"", "notes.mp4": b"not a video, just text\n"}
    for name, content in bad.items():
        (data / "train" / name).write_bytes(content)
        (data / "val" / name).write_bytes(content)
    for split in ("train", "val", "test"):
        folder = "train" if split == "train" else "val"
        with open(data / f"{split}.csv", "a") as f:
            f.writelines(f"{folder}/{name} 1\n" for name in bad)
    out = str(tmp_path / "run")
    # One loader worker: messages logged inside workers must reach the log too.
    run_net("DATA.PATH_TO_DATA_DIR", str(data), "OUTPUT_DIR", out, "DATA_LOADER.NUM_WORKERS", "1")
    log = open(os.path.join(out, "log.txt")).read()
    for name in bad:
        assert os.path.join(str(data), "train", name) in log
        assert os.path.join(str(data), "val", name) in log
    record = _test_record(out)
    assert record["num_samples"] == 12  # the 3 unreadable test videos have no view and are left out
    views_seen = np.load(os.path.join(out, "test_view_scores.npz"))["views_seen"]
    assert views_seen.tolist() == [2] * 12 + [0] * 3


def test_checkpoint_holds_the_class_names(motion_dir, tmp_path):
    out = str(tmp_path / "run")
    run_net("DATA.PATH_TO_DATA_DIR", motion_dir, "OUTPUT_DIR", out, "TEST.ENABLE", "False", "TRAIN.EVAL_PERIOD", "0")
    state = torch.load(os.path.join(out, "checkpoints", "last.pyth"), map_location="cpu", weights_only=False)
    assert state["class_names"] == ["right", "left", "up", "down", "clockwise", "counterclockwise"]
