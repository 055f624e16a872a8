"""The motion demo, shortened for CI: the video model learns what single frames cannot tell.

The full demo (600 training clips, 16 epochs; figures in projects/video/README.md) reaches >= 90%. Here both
models get the same few minutes on a smaller set, and the temporal one must clearly beat the frame-averaged
control, which has no signal to learn and stays near chance (1 / 6).
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHORT = ["SOLVER.MAX_EPOCH", "14", "TRAIN.BATCH_SIZE", "16", "TRAIN.EVAL_PERIOD", "0", "TRAIN.TENSORBOARD", "False"]


def _start(config: str, data: str, out: str) -> subprocess.Popen:
    cmd = [sys.executable, "tools/run_net.py", "--cfg", f"configs/DEMO/{config}", *SHORT]
    cmd += ["DATA.PATH_TO_DATA_DIR", data, "OUTPUT_DIR", out]
    with open(f"{out}.stderr", "w") as stderr:  # a file, not a pipe: a full pipe would stall one run
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)


def _test_top1(proc: subprocess.Popen, out: str) -> float:
    proc.wait(timeout=1200)
    with open(f"{out}.stderr") as f:
        assert proc.returncode == 0, f.read()[-3000:]
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if '"split": "test"' in line][-1]["top1"]


@pytest.mark.slow
def test_motion_needs_more_than_one_frame(tmp_path):
    from projects.video.tools.make_motion_dataset import make_motion_dataset

    data = str(tmp_path / "motion")
    make_motion_dataset(data, num_train=240, num_val=60, seed=1, progress=False)
    # Both runs at once (each one thread, CPU_THREADS 1): the results do not depend on it, the wall time halves.
    runs = {
        name: (_start(config, data, str(tmp_path / name)), str(tmp_path / name))
        for name, config in (("video", "video_motion.yaml"), ("frames", "video_motion_frames.yaml"))
    }
    video, frames = (_test_top1(*runs[name]) for name in ("video", "frames"))
    assert frames <= 40.0, f"single frames should be near chance (16.7%), got {frames:.1f}%"
    assert video >= 60.0 and video - frames >= 30.0, f"video {video:.1f}% vs single frames {frames:.1f}%"
