"""tools/explain.py, tools/extract_features.py and tools/stream.py on generated files (random-weight tiny models)."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
VIDEO_CFG = str(ROOT / "configs/DEMO/video_motion.yaml")
IMAGE_CFG = str(ROOT / "configs/DEMO/MVITv2_digits.yaml")
# The demo models at 16 channels (the same stages, pooling and tokens): the tools' logic, not the width, is tested.
NARROW = ["--opts", "MVIT.EMBED_DIM", "16"]


def tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    """2 s of 64x48 H.264 at 30 fps (60 frames)."""
    make = tool("make_test_video")
    return make.write_video(str(tmp_path_factory.mktemp("videos") / "walk.mp4"), 2.0, 64, 48, 30)


def test_shared_decoding_gives_the_clips_of_per_window_decoding(video):
    extract = tool("extract_features")
    from mvit.config import load_config
    from projects.video import add_video_config
    from projects.video.data.kinetics import build_eval_transform

    cfg = load_config(VIDEO_CFG, [], extensions=[add_video_config])
    windows = extract.plan_windows(60, 30.0, 8, 2, 30, 0.25)  # 16-frame clips every 7.5 frames
    assert len(windows) == 6 and windows[-1].last <= 59
    assert windows[1].indices.tolist() == [7, 9, 11, 13, 16, 18, 20, 22]  # linspace(7.5, 22.5, 8) truncated
    transform = build_eval_transform(cfg)
    shared = list(extract.shared_clips(video, windows, transform))
    separate = list(extract.per_window_clips(video, windows, transform))
    assert [k for k, _ in shared] == list(range(6))
    for (_, a), (_, b) in zip(shared, separate):
        assert a.shape == (3, 8, 32, 32)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_extract_features_outputs_resume_and_bad_files(video, tmp_path, capsys):
    extract = tool("extract_features")
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    listing = tmp_path / "videos.csv"
    listing.write_text(f"{video} 0\nbroken.mp4 1\n")
    out = tmp_path / "features"
    args = ["--cfg", VIDEO_CFG, "--random-weights", str(listing), "--out", str(out), "--stage-maps", "--no-progress"]
    torch.manual_seed(0)  # --random-weights: the same model in each run
    assert extract.main(args + ["--batch", "4"] + NARROW) == 0
    err = capsys.readouterr().err
    assert err.count("skipped:") == 1 and "broken.mp4" in err
    with np.load(out / "walk.npz") as npz:
        start, end, features, scores = npz["start"], npz["end"], npz["features"], npz["scores"]
        stage_maps = [npz[f"stage{k}"] for k in range(3)]
    # 16-frame clips (8 frames every 2nd at 30 fps) every half clip (8 frames) over 60 frames: 6 windows.
    assert len(start) == 6 and np.allclose(start, np.arange(6) * 8 / 30) and np.allclose(end - start, 16 / 30)
    assert features.shape == (6, 64) and scores.shape == (6, 6) and np.allclose(scores.sum(1), 1, atol=1e-5)
    assert [m.shape for m in stage_maps] == [(6, 16), (6, 32), (6, 64)]
    rows = list(csv.reader(open(out / "walk.csv")))
    assert rows[0][:4] == ["start", "end", "top1", "score1"] and len(rows) == 7
    assert os.path.getsize(out / "walk.png") > 1000
    index = list(csv.DictReader(open(out / "index.csv")))
    assert [r["status"] for r in index] == ["ok", index[1]["status"]] and index[1]["status"].startswith("error:")
    # The batch size does not change the numbers; a second run skips the finished video.
    reference = features.copy()
    os.remove(out / "walk.npz")
    torch.manual_seed(0)
    assert extract.main(args + ["--batch", "1"] + NARROW) == 0
    with np.load(out / "walk.npz") as npz:
        np.testing.assert_allclose(npz["features"], reference, rtol=1e-4, atol=1e-5)
    mtime = os.path.getmtime(out / "walk.npz")
    assert extract.main(args + NARROW) == 0
    assert os.path.getmtime(out / "walk.npz") == mtime
    assert list(csv.DictReader(open(out / "index.csv")))[0]["status"] == "done earlier"


def test_stream_predicts_every_n_frames(video, capsys):
    stream = tool("stream")
    assert stream.main(["--cfg", VIDEO_CFG, "--random-weights", video, "--every", "10", *NARROW]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("t=")]
    # A full 16-frame buffer at frame 16, then every 10 frames up to 60: frames 16, 26, 36, 46, 56.
    assert [int(line.split("frame")[1].split(":")[0]) for line in lines] == [16, 26, 36, 46, 56]
    assert all("ms" in line for line in lines)


def test_explain_tool_image_and_clip(video, tmp_path):
    from PIL import Image

    explain = tool("explain")
    image = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)).save(image)
    out = tmp_path / "maps"
    for cfg, path, shape in [(IMAGE_CFG, str(image), (32, 32)), (VIDEO_CFG, video, (8, 32, 32))]:
        assert explain.main(["--cfg", cfg, "--random-weights", path, "--out", str(out), *NARROW]) == 0
        stem = out / Path(path).stem
        with np.load(f"{stem}.npz") as npz:
            assert npz["gradcam"].shape == npz["rollout"].shape == shape
            assert len(npz["topk"]) == 5 and np.isclose(npz["probs"].sum(), 1, atol=1e-5)
        assert os.path.getsize(f"{stem}.png") > 1000


def test_explain_tool_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "tools/explain.py"), "--cfg", IMAGE_CFG, "--random-weights", str(bad)]
    proc = subprocess.run(cmd + ["--out", str(tmp_path)], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "broken.png" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
