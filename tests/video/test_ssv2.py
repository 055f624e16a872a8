"""Something-Something v2: label files, webm videos and frame lists, segment sampling, channel order, views."""

import io
import json
import logging
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image

from mvit.config import load_config
from mvit.errors import DataError
from projects.video.config import add_video_config
from projects.video.data import SSv2, read_frame_lists, segment_frame_indices
from projects.video.tools.make_motion_dataset import write_mp4

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# SSv2 ships VP9 webm files; an FFmpeg build without libvpx gets H.264 mp4 files instead (same frames).
VP9 = "libvpx-vp9" in av.codecs_available
SUFFIX = ".webm" if VP9 else ".mp4"

# labels.json lists templates without brackets, not in index order; the split files keep the brackets.
CLASSES = {
    "Pushing something from left to right": "1",
    "Holding something next to something": "0",
    "Pushing something from right to left": "2",
}
TEMPLATES = [
    "Holding [something] next to [something]",
    "Pushing [something] from left to right",
    "Pushing [something] from right to left",
]


def _cfg(data_dir: str, *opts: str):
    base = [
        "DATA.PATH_TO_DATA_DIR", data_dir, "DATA.NUM_FRAMES", "4", "DATA.SSV2_VIDEO_SUFFIX", SUFFIX,
        "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "DATA.TRAIN_CROP_SIZE", "24", "DATA.TEST_CROP_SIZE", "32",
        "DATA.MEAN", "[0.5, 0.5, 0.5]", "DATA.STD", "[0.25, 0.25, 0.25]", "MODEL.NUM_CLASSES", "3",
        "TEST.NUM_ENSEMBLE_VIEWS", "1", "TEST.NUM_SPATIAL_CROPS", "1", "AUG.ENABLE", "False",
    ]  # fmt: skip
    return load_config(None, base + list(opts), extensions=[add_video_config])


def _write_video(path: str, frames: np.ndarray, fps: int = 12) -> None:
    """(T, H, W, 3) uint8 RGB frames as a VP9 webm (near-lossless), or H.264 mp4 without libvpx."""
    if not VP9:
        write_mp4(path, frames, fps)
        return
    with av.open(path, "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "4", "b": "0", "threads": "1", "deadline": "realtime", "cpu-used": "8"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _jpeg(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _counter(num_frames: int, height: int = 32, width: int = 48) -> np.ndarray:
    """Frame i is uniformly gray level 8 * i: decoded frames tell which frame they were."""
    return np.stack([np.full((height, width, 3), 8 * i, np.uint8) for i in range(num_frames)])


def make_ssv2(root, videos: dict, layout: str, classes: dict = CLASSES) -> str:
    """An SSv2 data folder: ``videos`` maps split -> [(id, template index, (T, H, W, 3) frames)].

    ``layout`` "video" writes ``<id><SUFFIX>`` files, "frames" PySlowFast's ``<id>/<id>_000001.jpg`` frames
    and ``train.csv`` / ``val.csv`` frame lists.
    """
    root = str(root)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "something-something-v2-labels.json"), "w") as f:
        json.dump(classes, f)
    files = {"train": "something-something-v2-train.json", "val": "something-something-v2-validation.json"}
    for split, items in videos.items():
        entries = [
            {"id": vid, "label": "a label text", "template": TEMPLATES[label], "placeholders": ["x", "y"]}
            for vid, label, _ in items
        ]
        with open(os.path.join(root, files[split]), "w") as f:
            json.dump(entries, f)
        if layout == "video":
            for vid, _, frames in items:
                _write_video(os.path.join(root, vid + SUFFIX), frames)
            continue
        rows = ["original_vido_id video_id frame_id path labels"]
        for n, (vid, _, frames) in enumerate(items):
            os.makedirs(os.path.join(root, "frames", vid), exist_ok=True)
            for i, frame in enumerate(frames):
                rel = f"frames/{vid}/{vid}_{i + 1:06d}.jpg"
                with open(os.path.join(root, rel), "wb") as f:
                    f.write(_jpeg(frame))
                rows.append(f'{vid} {n} {i} {rel} ""')
        with open(os.path.join(root, f"{split}.csv"), "w") as f:
            f.write("\n".join(rows) + "\n")
    return root


def _levels(clip: torch.Tensor, mean: float = 0.5, std: float = 0.25) -> torch.Tensor:
    """(C, T, H, W) normalised clip -> (T,) mean pixel level of channel 0 in [0, 255]."""
    return (clip[0].mean((1, 2)) * std + mean) * 255


# ---------------------------------------------------------------------------------------------- sampling


def test_segment_indices_follow_pyslowfast_rule():
    # 30 frames, 4 segments: s = 29 / 4 = 7.25; bounds round(0, 7.25, 14.5, 21.75, 29) = 0, 7, 14, 22, 29
    # (14.5 rounds half to even, as np.round); middles (start + end) // 2.
    assert segment_frame_indices(30, 4, train=False).tolist() == [3, 10, 18, 25]
    # 2 test clips: start + (end - start) * (2k + 1) // 4, widths 7, 7, 8, 7.
    assert segment_frame_indices(30, 4, False, clip_idx=0, num_clips=2).tolist() == [1, 8, 16, 23]
    assert segment_frame_indices(30, 4, False, clip_idx=1, num_clips=2).tolist() == [5, 12, 20, 27]
    # Fewer frames than segments: s = 0.5, bounds 0, 0, 1, 2, 2 -> frames repeat.
    assert segment_frame_indices(3, 4, train=False).tolist() == [0, 0, 1, 2]
    assert segment_frame_indices(1, 4, train=True).tolist() == [0, 0, 0, 0]
    draws = torch.stack([segment_frame_indices(30, 4, train=True) for _ in range(400)])
    assert draws.min(0).values.tolist() == [0, 7, 14, 22]  # random.randint: both ends reached
    assert draws.max(0).values.tolist() == [7, 14, 22, 29]


def test_segment_indices_round_half_to_even_like_numpy():
    for frames in range(1, 100):  # 16 segments: many bounds fall on .5 exactly
        seg = float(frames - 1) / 16
        bounds = [int(np.round(seg * i)) for i in range(17)]
        expected = [(bounds[i] + bounds[i + 1]) // 2 for i in range(16)]
        assert segment_frame_indices(frames, 16, train=False).tolist() == expected, frames


@pytest.mark.parametrize("layout", ["video", "frames"])
def test_decoded_frames_are_the_pyslowfast_frames(tmp_path, layout):
    # Frame i has level 8 * i; 30 frames, 4 segments -> test frames 3, 10, 18, 25 (see above).
    data = make_ssv2(tmp_path, {"train": [("7", 0, _counter(30))], "val": [("8", 1, _counter(30))]}, layout)
    test = SSv2.from_config(_cfg(data), "test")
    clip, label, index = test[0]
    assert clip.shape == (3, 4, 32, 32) and (label, index) == (1, 0)
    assert torch.allclose(_levels(clip), 8.0 * torch.tensor([3, 10, 18, 25]), atol=3), _levels(clip)
    train = SSv2.from_config(_cfg(data), "train")
    bounds = [(0, 7), (7, 14), (14, 22), (22, 29)]
    for _ in range(5):
        frame = (_levels(train[0][0]) / 8).round()
        assert all(lo <= f <= hi for f, (lo, hi) in zip(frame.tolist(), bounds)), frame


def test_webm_frame_count_is_exact(tmp_path):
    # A webm header's duration gives one frame less here; decoding the whole video counts all 31 frames.
    data = make_ssv2(tmp_path, {"val": [("8", 1, _counter(31))]}, "video")
    test = SSv2.from_config(_cfg(data, "DATA.NUM_FRAMES", "3"), "test")
    # s = 10: bounds 0, 10, 20, 30 -> middles 5, 15, 25.
    assert torch.allclose(_levels(test[0][0]), 8.0 * torch.tensor([5, 15, 25]), atol=3)


# ---------------------------------------------------------------------------------------------- channels


@pytest.mark.parametrize("layout", ["video", "frames"])
def test_channel_order_and_normalisation_follow_pyslowfast(tmp_path, layout):
    frames = np.broadcast_to(np.array([200, 100, 30], np.uint8), (6, 32, 48, 3)).copy()  # R, G, B
    data = make_ssv2(tmp_path, {"val": [("1", 0, frames)]}, layout)
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 0.125]
    opts = ["DATA.MEAN", str(mean), "DATA.STD", str(std)]
    # PySlowFast normalises OpenCV's BGR frames channel by channel, then REVERSE_INPUT_CHANNEL flips them.
    for reverse, expected in ((False, [(30, 0), (100, 1), (200, 2)]), (True, [(200, 2), (100, 1), (30, 0)])):
        clip = SSv2.from_config(_cfg(data, "DATA.REVERSE_INPUT_CHANNEL", str(reverse), *opts), "test")[0][0]
        for channel, (level, stat) in enumerate(expected):
            want = (level / 255 - mean[stat]) / std[stat]
            assert abs(clip[channel].mean().item() - want) < 4 / 255 / std[stat], (reverse, channel)


def test_frames_decode_as_opencv_does(tmp_path):
    cv2 = pytest.importorskip("cv2")
    texture = np.random.default_rng(0).integers(0, 256, (4, 40, 56, 3), dtype=np.uint8)
    data = make_ssv2(tmp_path, {"val": [("3", 2, texture)]}, "frames")
    dataset = SSv2.from_config(_cfg(data, "DATA.NUM_FRAMES", "4"), "test")
    frames = dataset.read_frames(0, 0)  # s = 0.75: bounds 0, 1, 2, 2, 3 -> frames 0, 1, 2, 2
    for position, i in enumerate([0, 1, 2, 2]):
        with open(os.path.join(data, "frames", "3", f"3_{i + 1:06d}.jpg"), "rb") as f:
            bgr = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(frames[position].permute(1, 2, 0).numpy(), bgr)  # bit-identical, BGR


# ---------------------------------------------------------------------------------------- labels, views


def test_labels_class_names_and_frame_lists(tmp_path):
    videos = {
        "train": [(str(100 + i), i % 3, _counter(5)) for i in range(5)],
        "val": [("200", 2, _counter(5)), ("201", 0, _counter(5))],
    }
    data = make_ssv2(tmp_path, videos, "frames")
    train = SSv2.from_config(_cfg(data), "train")
    assert train.classes == [
        "Holding something next to something",
        "Pushing something from left to right",
        "Pushing something from right to left",
    ]
    assert train.ids == ["100", "101", "102", "103", "104"] and train.labels == [0, 1, 2, 0, 1]
    val = SSv2.from_config(_cfg(data), "val")
    assert val.ids == ["200", "201"] and val.labels == [2, 0]
    assert val.paths == [os.path.join(data, "frames", "200"), os.path.join(data, "frames", "201")]
    lists = read_frame_lists(os.path.join(data, "val.csv"))
    assert lists["201"] == [os.path.join(data, f"frames/201/201_{i:06d}.jpg") for i in range(1, 6)]
    assert (
        read_frame_lists(os.path.join(data, "val.csv"), prefix="/ssv2")["200"][0] == "/ssv2/frames/200/200_000001.jpg"
    )


def test_multi_view_items_and_aggregation(tmp_path):
    # A horizontal ramp: the 3 crops of a landscape frame (left, center, right) differ.
    ramp = np.broadcast_to(np.linspace(0, 240, 48).astype(np.uint8)[None, None, :, None], (8, 32, 48, 3)).copy()
    videos = {"train": [("1", 0, ramp)], "val": [("5", 1, ramp), ("6", 2, ramp)]}
    data = make_ssv2(tmp_path, videos, "frames")
    opts = ["TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "3", "DATA.TEST_CROP_SIZE", "24"]
    out = str(tmp_path / "out")
    dataset = SSv2.from_config(_cfg(data, "OUTPUT_DIR", out, *opts), "test")
    assert dataset.num_views == 6 and len(dataset) == 12
    assert dataset.eval_transform.short_side == 24  # PySlowFast's SSv2 test scale: TEST_CROP_SIZE
    items = [dataset[i] for i in range(len(dataset))]
    assert [(label, index) for _, label, index in items] == [(1, i) for i in range(6)] + [(2, 6 + i) for i in range(6)]
    left, center, right = (items[view][0][0].mean().item() for view in range(3))
    assert left < center < right
    assert torch.equal(items[3][0], dataset[3][0])  # deterministic views
    logits = torch.randn(12, 3)
    scores, labels = dataset.aggregate(torch.arange(12), logits, torch.tensor([1] * 6 + [2] * 6))
    assert torch.allclose(scores, logits.softmax(-1).view(2, 6, 3).sum(1), atol=1e-6)
    assert labels.tolist() == [1, 2]
    saved = np.load(os.path.join(out, "test_view_scores.npz"))
    assert saved["view_scores"].shape == (2, 6, 3)


@pytest.mark.parametrize("flip", [False, True])
def test_random_flip_follows_the_config(tmp_path, flip):
    ramp = np.broadcast_to(np.linspace(0, 240, 48).astype(np.uint8)[None, None, :, None], (8, 32, 48, 3)).copy()
    data = make_ssv2(tmp_path, {"train": [("1", 0, ramp)]}, "frames")
    dataset = SSv2.from_config(_cfg(data, "DATA.RANDOM_FLIP", str(flip), "AUG.NUM_SAMPLE", "2"), "train")
    mirrored = 0
    for _ in range(10):
        clips, label, index = dataset[0]
        assert len(clips) == 2 and clips[0].shape == (3, 4, 24, 24) and (label, index) == (0, 0)
        mirrored += sum(bool(c[0, :, :, 0].mean() > c[0, :, :, -1].mean()) for c in clips)
    assert (mirrored > 0) == flip


def test_unreadable_videos_and_frames_are_replaced(tmp_path, caplog):
    data = make_ssv2(tmp_path / "v", {"train": [("1", 0, _counter(6)), ("2", 1, _counter(6))]}, "video")
    with open(os.path.join(data, "2" + SUFFIX), "w") as f:
        f.write("not a video\n")
    caplog.set_level(logging.WARNING)
    dataset = SSv2.from_config(_cfg(data), "train")
    assert [dataset[i][2] for i in range(2)] == [0, 0]
    assert os.path.join(data, "2" + SUFFIX) in caplog.text
    data = make_ssv2(tmp_path / "f", {"val": [("1", 0, _counter(4)), ("2", 1, _counter(4))]}, "frames")
    with open(os.path.join(data, "frames", "1", "1_000002.jpg"), "wb") as f:
        f.write(b"\xff\xd8 truncated")
    dataset = SSv2.from_config(_cfg(data), "test")
    assert [dataset[i][1:] for i in range(2)] == [(1, 1), (1, 1)]  # video 0 replaced by the next one
    assert "1_000002.jpg" in caplog.text


def test_predict_loader_samples_as_the_test_dataset(tmp_path):
    import projects.video  # noqa: F401  (registers the video input loader)
    from mvit.data import find_input_loader

    data = make_ssv2(tmp_path, {"val": [("4", 0, _counter(30))]}, "video")
    path = os.path.join(data, "4" + SUFFIX)
    opts = ["TEST.DATASET", "ssv2", "TEST.NUM_SPATIAL_CROPS", "3", "DATA.REVERSE_INPUT_CHANNEL", "True"]
    cfg = _cfg(data, *opts)
    views = find_input_loader(path)(cfg, path)
    dataset = SSv2.from_config(cfg, "test")
    assert views.shape == (3, 3, 4, 32, 32)
    assert torch.equal(views, torch.stack([dataset[i][0] for i in range(3)]))
    assert torch.allclose(_levels(views[1]), 8.0 * torch.tensor([3, 10, 18, 25]), atol=3)
    # A Kinetics config keeps Kinetics' clips: 4 frames every 4th at 30 fps from a 12 fps video.
    kinetics = find_input_loader(path)(_cfg(data, "TEST.DATASET", "kinetics"), path)
    assert not torch.allclose(_levels(kinetics[0]), _levels(views[1]), atol=3)


# ------------------------------------------------------------------------------------------------ errors


def _edit(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: os.remove(f"{d}/something-something-v2-labels.json"), r"labels\.json: not found"),
        (lambda d: _edit(f"{d}/something-something-v2-train.json", '[{"id": "1",'), r"train\.json: invalid JSON at line 1"),
        (lambda d: _edit(f"{d}/something-something-v2-labels.json", '{"A": "0", "B": "x"}'), r"template 'B': index 'x' is not"),
        (lambda d: _edit(f"{d}/something-something-v2-labels.json", '{"A": "0", "B": "2"}'), r"labels\.json: the indices are not 0 \.\. 1"),
        (lambda d: _edit(f"{d}/something-something-v2-train.json", '[{"id": "5", "template": "Spinning [something]"}]'),
         r"train\.json: entry id 5: template 'Spinning something' is not in something-something-v2-labels\.json"),
        (lambda d: _edit(f"{d}/something-something-v2-train.json", '[{"id": "9", "label": "x"}]'), r"train\.json: entry id 9: no 'template'"),
        (lambda d: _edit(f"{d}/something-something-v2-train.json", '[{"template": "x"}]'), r"train\.json: entry 0 has no 'id'"),
        (lambda d: _edit(f"{d}/train.csv", "id path\n"), r"train\.csv:1: expected the header"),
        (lambda d: _edit(f"{d}/train.csv", 'original_vido_id video_id frame_id path labels\n1 0 0 a.jpg ""\n1 0 a.jpg\n'),
         r"train\.csv:3: expected 5 fields, got 3"),
        (lambda d: _edit(f"{d}/train.csv", 'original_vido_id video_id frame_id path labels\n1 0 0 a.jpg ""\n'),
         r"train\.csv: no frames for 1 videos of .*train\.json, e\.g\. id 2"),
    ],
)  # fmt: skip
def test_bad_label_files_name_the_file_and_entry(tmp_path, damage, message):
    data = make_ssv2(tmp_path, {"train": [("1", 0, _counter(2)), ("2", 1, _counter(2))]}, "frames")
    damage(data)
    with pytest.raises(DataError, match=message):
        SSv2.from_config(_cfg(data), "train")


def test_label_beyond_num_classes(tmp_path):
    data = make_ssv2(tmp_path, {"train": [("1", 2, _counter(2))]}, "frames")
    with pytest.raises(DataError, match=r"train\.json: label 2 >= MODEL\.NUM_CLASSES=2"):
        SSv2.from_config(_cfg(data, "MODEL.NUM_CLASSES", "2"), "train")


# ------------------------------------------------------------------------------------------- run_net


def _run_net(*opts: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, os.path.join(ROOT, "tools", "run_net.py"), "--cfg", "configs/DEMO/video_motion.yaml"]
    tiny = [
        "TRAIN.DATASET", "ssv2", "TEST.DATASET", "ssv2", "MODEL.NUM_CLASSES", "3", "DATA.NUM_FRAMES", "8",
        "DATA.SSV2_VIDEO_SUFFIX", SUFFIX, "DATA.REVERSE_INPUT_CHANNEL", "True", "TEST.NUM_ENSEMBLE_VIEWS", "1",
        "TEST.NUM_SPATIAL_CROPS", "3", "SOLVER.MAX_EPOCH", "1", "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "6",
        "TRAIN.EVAL_PERIOD", "1", "TRAIN.TENSORBOARD", "False", "MVIT.EMBED_DIM", "16",
        "DATA_LOADER.NUM_WORKERS", "0",
    ]  # fmt: skip
    return subprocess.run(cmd + tiny + list(opts), cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_run_net_trains_and_tests_on_ssv2(tmp_path):
    rng = np.random.default_rng(0)
    videos = {
        split: [(f"{split}{i}", i % 3, rng.integers(0, 256, (12, 32, 40, 3), dtype=np.uint8)) for i in range(n)]
        for split, n in (("train", 8), ("val", 4))
    }
    data = make_ssv2(tmp_path / "data", videos, "video")
    out = str(tmp_path / "run")
    proc = _run_net("DATA.PATH_TO_DATA_DIR", data, "OUTPUT_DIR", out)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    with open(os.path.join(out, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    test = [r for r in records if r.get("split") == "test"][-1]
    assert test["num_samples"] == 4 and 0.0 <= test["top1"] <= test["top5"] <= 100.0  # 4 videos x 3 crops
    saved = np.load(os.path.join(out, "test_view_scores.npz"))
    assert saved["view_scores"].shape == (4, 3, 3) and not np.isnan(saved["view_scores"]).any()
    state = torch.load(os.path.join(out, "checkpoints", "last.pyth"), map_location="cpu", weights_only=False)
    assert state["class_names"] == [
        "Holding something next to something",
        "Pushing something from left to right",
        "Pushing something from right to left",
    ]


def test_run_net_bad_label_file_is_one_line(tmp_path):
    data = make_ssv2(tmp_path, {"train": [("1", 0, _counter(2))]}, "frames")
    _edit(os.path.join(data, "something-something-v2-train.json"), '[{"id": "4", "template": "Nothing"}]')
    proc = _run_net("DATA.PATH_TO_DATA_DIR", data, "OUTPUT_DIR", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "entry id 4: template 'Nothing' is not in" in proc.stderr and "Traceback" not in proc.stderr
