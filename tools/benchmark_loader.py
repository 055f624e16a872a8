"""Input-pipeline benchmark (``tools/benchmark.py --loader``): items per second of one loader worker.

Generates ImageNet-like JPEGs and Kinetics-like clips in a temporary folder, then times, in one process with one
thread and in alternating rounds (the order flips every round), our image and video pipelines (training and test)
against the references: timm's ``create_transform`` + ``timm.data.ImageDataset`` (PIL loading) for images, and
for video pytorchvideo's ``LabeledVideoDataset`` (PyAV decoding of a random / uniformly spaced span of the same
length) followed by the same frame sampling and the same clip augmentation (pytorchvideo 0.1.5's own transforms
do not import with torchvision >= 0.17). "today" is the previous video decoding path (pytorchvideo's
``EncodedVideoPyAV.get_clip``) with the same transforms. Items/s are per CPU-second (process time) and per
wall-second; the ratio is the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import av
import numpy as np
import torch
from PIL import Image

import mvit

ROOT = Path(__file__).resolve().parents[1]
IMAGE_CONFIG = ROOT / "configs" / "IN1K" / "MVITv2_T.yaml"
VIDEO_CONFIG = ROOT / "configs" / "K400" / "MVITv2_S_16x4.yaml"
# (encoder, fps, width, height): the codecs, rates and sizes of Kinetics downloads (short side 240-480).
CLIP_SPECS = (
    ("libx264", 30, 340, 256),
    ("libx264", 25, 480, 360),
    ("libx264", 60, 426, 240),
    ("mpeg4", 30, 320, 240),
    ("libvpx-vp9", 25, 340, 256),
    ("libvpx-vp9", 30, 256, 456),
)


# ----------------------------------------------------------------------------------------------- data
def sample_photos() -> List[np.ndarray]:
    """Natural photos shipped with scikit-image and scikit-learn, (H, W, 3) uint8."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
    photos = [getattr(skimage.data, name)() for name in names]
    return [p[..., :3] for p in photos] + list(load_sample_images().images)


def _noisy(image: np.ndarray, rng: np.random.Generator, sigma: float = 4.0) -> np.ndarray:
    """Sensor-like noise, so that codecs see the texture of real photos and not clean gradients."""
    return np.clip(image + rng.normal(0.0, sigma, image.shape), 0, 255).astype(np.uint8)


def make_images(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEGs of about 500x375 (a quarter portrait) under ``root/{train,val}/<class>/``: random crops of the
    sample photos, resized, with noise, quality 90 (about 100-150 kB, like ImageNet's)."""
    rng = np.random.default_rng(seed)
    photos = sample_photos()
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        scale = rng.uniform(0.6, 1.0)
        ch, cw = int(h * scale), int(w * scale)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        size = (375, 500) if i % 4 == 3 else (500, 375)
        crop = Image.fromarray(photo[y : y + ch, x : x + cw]).resize(size, Image.BICUBIC)
        for split in ("train", "val"):
            folder = root / split / f"class{i % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_noisy(np.asarray(crop), rng)).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def make_clip(path: Path, codec: str, fps: int, width: int, height: int, seconds: float = 10.0, seed: int = 0) -> None:
    """A clip of a camera panning and zooming slowly over a sample photo, with noise (yuv420p)."""
    rng = np.random.default_rng(seed)
    photo = sample_photos()[seed % 8]
    canvas = np.asarray(Image.fromarray(photo).resize((int(width * 1.6), int(height * 1.6)), Image.BICUBIC))
    num = int(round(seconds * fps))
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libvpx-vp9":
            stream.options = {"deadline": "realtime", "cpu-used": "8"}
        stream.bit_rate = int(1.8e6 * width * height / (340 * 256))
        for i in range(num):
            t = i / max(num - 1, 1)
            y = int((canvas.shape[0] - height) * (0.5 - 0.5 * np.cos(2 * np.pi * t)))
            x = int((canvas.shape[1] - width) * t)
            frame = _noisy(canvas[y : y + height, x : x + width], rng, 3.0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_clips(root: Path, copies: int = 1) -> Tuple[Path, List[str]]:
    """One clip per :data:`CLIP_SPECS` entry (times ``copies``) and ``train.csv`` / ``val.csv`` / ``test.csv``."""
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i, (codec, fps, width, height) in enumerate(CLIP_SPECS * copies):
        name = f"{i:02d}_{codec}_{fps}fps_{width}x{height}.{'webm' if 'vp9' in codec else 'mp4'}"
        make_clip(root / name, codec, fps, width, height, seed=i)
        names.append(name)
    for split in ("train", "val", "test"):
        (root / f"{split}.csv").write_text("".join(f"{name} {i % 4}\n" for i, name in enumerate(names)))
    return root, names


# ----------------------------------------------------------------------------------------------- pipelines
def _config(path: Path, data_dir: Path, video: bool):
    from mvit.config import load_config

    opts = ["DATA.PATH_TO_DATA_DIR", str(data_dir), "MODEL.NUM_CLASSES", "4"]
    if video:
        from projects.video.config import add_video_config

        return load_config(str(path), opts, extensions=[add_video_config])
    from projects.classification.config import add_classification_config

    return load_config(str(path), opts, extensions=[add_classification_config])


def _cycle(dataset, train: bool) -> Callable[[], int]:
    """A step that loads the next item of ``dataset`` (random order in training) and returns how many it loaded."""
    order = list(range(len(dataset)))
    state = {"i": 0}

    def step() -> int:
        if train and state["i"] % len(order) == 0:
            random.shuffle(order)
        dataset[order[state["i"] % len(order)]]
        state["i"] += 1
        return 1

    return step


def image_pipelines(data_dir: Path, train: bool) -> Tuple[Dict[str, Callable[[], int]], int]:
    """Ours (``projects.classification.data``) and timm's ImageDataset + create_transform, same config; the items
    of one pass."""
    from timm.data import ImageDataset, create_transform

    from projects.classification.data import build_imagenet

    cfg = _config(IMAGE_CONFIG, data_dir, video=False)
    ours = build_imagenet(cfg, "train" if train else "val")
    a, d = cfg.AUG, cfg.DATA
    if train:
        transform = create_transform(
            d.TRAIN_CROP_SIZE, is_training=True, scale=tuple(a.SCALE), ratio=tuple(a.RATIO), hflip=a.HFLIP,
            color_jitter=a.COLOR_JITTER, auto_augment=a.AA_TYPE, interpolation=a.INTERPOLATION, mean=d.MEAN,
            std=d.STD, re_prob=a.RE_PROB, re_mode=a.RE_MODE, re_count=a.RE_COUNT,
        )  # fmt: skip
        from projects.classification.data import cap_rand_augment_magnitude

        transform = cap_rand_augment_magnitude(transform)  # Pillow >= 12 rejects magnitude 10 (see there)
    else:
        transform = create_transform(
            d.TEST_CROP_SIZE, is_training=False, interpolation=a.INTERPOLATION, mean=d.MEAN, std=d.STD,
            crop_pct=d.VAL_CROP_RATIO,
        )  # fmt: skip
    ref = ImageDataset(str(data_dir / ("train" if train else "val")), transform=transform)
    return {"ours": _cycle(ours, train), "timm": _cycle(ref, train)}, len(ours)


def _plain_timm_ops(augment) -> None:
    """Put timm's own op functions back into a RandAugment that mvit.data.augment.accelerate changed."""
    from mvit.data.augment import _STAND_INS

    originals = {stand_in: timm_fn for timm_fn, stand_in in _STAND_INS.items()}
    for op in augment.ops:
        op.aug_fn = originals.get(op.aug_fn, op.aug_fn)


def video_pipelines(data_dir: Path, train: bool) -> Tuple[Dict[str, Callable[[], int]], int]:
    """Ours, today's (pytorchvideo's get_clip decoding, timm's own RandAugment ops) and pytorchvideo's
    LabeledVideoDataset (with today's transforms); the items of one pass."""
    from pytorchvideo.data import labeled_video_dataset, make_clip_sampler

    from projects.video.data import Kinetics
    from projects.video.data.decoding import ReferenceVideoReader

    cfg = _config(VIDEO_CONFIG, data_dir, video=True)
    split = "train" if train else "test"
    ours = Kinetics.from_config(cfg, split)
    today = Kinetics.from_config(cfg, split)
    today.reader = ReferenceVideoReader
    if train:  # the references augment with timm's own RandAugment ops, as before mvit.data.augment
        _plain_timm_ops(today.train_transform.rand_augment.transform)
    d = cfg.DATA
    span = d.NUM_FRAMES * d.SAMPLING_RATE / d.TARGET_FPS
    if train:
        sampler = make_clip_sampler("random", span)
    else:
        sampler = make_clip_sampler("constant_clips_per_video", span, cfg.TEST.NUM_ENSEMBLE_VIEWS)
    num_samples = ours.num_samples

    def transform(item: dict) -> dict:
        video = item["video"]  # (C, T, H, W) float32 in [0, 255]
        index = torch.linspace(0, video.shape[1] - 1, d.NUM_FRAMES).long()
        clip = video[:, index].permute(1, 0, 2, 3).to(torch.uint8)
        if train:
            item["video"] = [today.train_transform(clip) for _ in range(num_samples)]
        else:
            item["video"] = ours.eval_transform(clip, 1)
        return item

    sampler_cls = torch.utils.data.RandomSampler if train else torch.utils.data.SequentialSampler

    def reference():
        csv = str(data_dir / f"{split}.csv")
        return labeled_video_dataset(
            csv, sampler, sampler_cls, transform=transform, video_path_prefix=str(data_dir), decode_audio=False,
            decoder="pyav",
        )  # fmt: skip

    ref = {"it": reference()}

    def ref_step() -> int:
        try:
            next(ref["it"])
        except StopIteration:  # one pass over the csv: a new dataset (pytorchvideo's does not restart)
            ref["it"] = reference()
            next(ref["it"])
        return 1

    # A pass: every video once (training) or every view of every video (test; pytorchvideo's sampler gives
    # NUM_ENSEMBLE_VIEWS clips per video, the center crop of each).
    steps = {"ours": _cycle(ours, train), "today": _cycle(today, train), "pytorchvideo": ref_step}
    return steps, ours.num_videos * (1 if train else cfg.TEST.NUM_ENSEMBLE_VIEWS)


# ----------------------------------------------------------------------------------------------- timing
@dataclass
class LoaderResult:
    pipeline: str  # "image train", ...
    rates: Dict[str, float]  # items per CPU-second (median over rounds), per implementation
    wall_rates: Dict[str, float]
    ratios: Dict[str, float]  # ours / other, median of per-round ratios
    rounds: List[Dict[str, float]] = field(default_factory=list)


def _timed(step: Callable[[], int], items: int) -> Tuple[float, float]:
    """(CPU seconds, wall seconds) of ``items`` calls of ``step``."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(items):
        step()
    return time.process_time() - cpu0, time.perf_counter() - wall0


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def bench_pipelines(name: str, steps: Dict[str, Callable[[], int]], rounds: int, items: int) -> LoaderResult:
    """Each round loads ``items`` items (whole passes over the files) under the same seeds for every pipeline: the
    same augmentation draws, so every pipeline does the same work (RandAugment's ops differ a lot in cost)."""
    keys = list(steps)
    for key in keys:  # warm-up: imports, first opens, caches
        steps[key]()
    per_round: List[Dict[str, float]] = []
    for r in range(rounds):
        row: Dict[str, float] = {}
        for key in keys if r % 2 == 0 else keys[::-1]:
            _seed_all(r)
            cpu, wall = _timed(steps[key], items)
            row[key], row[f"{key}_wall"] = items / cpu, items / wall
        per_round.append(row)
    rates = {k: statistics.median(r[k] for r in per_round) for k in keys}
    wall = {k: statistics.median(r[f"{k}_wall"] for r in per_round) for k in keys}
    ratios = {k: statistics.median(r["ours"] / r[k] for r in per_round) for k in keys if k != "ours"}
    return LoaderResult(name, rates, wall, ratios, per_round)


# ----------------------------------------------------------------------------------------------- profile
def profile_video_item(data_dir: Path, repeats: int = 3) -> Dict[str, float]:
    """Milliseconds (process CPU time) per training item of ours, by stage: open, seek + decode, convert, transform."""
    from projects.video.data import Kinetics
    from projects.video.data.decoding import VideoReader, _to_rgb

    cfg = _config(VIDEO_CONFIG, data_dir, video=True)
    dataset = Kinetics.from_config(cfg, "train")
    totals = {"open": 0.0, "seek + decode span": 0.0, "convert sampled frames to RGB": 0.0, "transforms": 0.0}
    clock, items = time.process_time, 0
    for _ in range(repeats):
        for path in dataset.paths:
            t0 = clock()
            reader = VideoReader(path)
            t1 = clock()
            indices = dataset.frame_indices(reader.num_frames, float(reader.fps), 0)
            start, end = reader.span_pts(indices)
            frames = reader._span(start, end)
            t2 = clock()
            positions = (indices - int(indices.min())).clamp(max=len(frames) - 1).tolist()
            rgb = {i: _to_rgb(frames[i]) for i in dict.fromkeys(positions)}
            clip = torch.stack([rgb[i] for i in positions]).permute(0, 3, 1, 2)
            t3 = clock()
            reader.close()
            for _ in range(dataset.num_samples):
                dataset.train_transform(clip)
            t4 = clock()
            for key, value in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                totals[key] += value
            items += 1
    return {key: 1000 * value / items for key, value in totals.items()}


# ----------------------------------------------------------------------------------------------- model rate
def model_train_rate(model: str, batch: int, steps: int = 2) -> float:
    """Training samples per CPU-second (1 thread) of a zoo model: forward, cross-entropy, backward, AdamW."""
    torch.manual_seed(0)
    net = mvit.create_model(model).train()
    shape = (3, 16, 224, 224) if mvit.models.model_info(model).dataset.startswith("kinetics") else (3, 224, 224)
    x, target = torch.randn(batch, *shape), torch.zeros(batch, dtype=torch.long)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-6)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), target).backward()
        optimizer.step()

    step()
    t0 = time.process_time()
    for _ in range(steps):
        step()
    return batch * steps / (time.process_time() - t0)


# ----------------------------------------------------------------------------------------------- report
def markdown(results: List[LoaderResult], profile: Dict[str, float], feeds: Dict[str, float], info: dict) -> str:
    lines = [
        "| pipeline | ours (items/s) | reference | reference (items/s) | ours / reference | ours wall (items/s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for key in r.ratios:
            lines.append(
                f"| {r.pipeline} | {r.rates['ours']:.2f} | {key} | {r.rates[key]:.2f} | **{r.ratios[key]:.2f}x** | "
                f"{r.wall_rates['ours']:.2f} |"
            )
    lines.append("\nItems per CPU-second of one worker (1 thread, process CPU time); a video training item is one")
    lines.append("decoded clip with its AUG.NUM_SAMPLE augmented copies, a test item one view.\n")
    if feeds:
        lines.append("| model (training) | samples/s | workers needed (ours) | workers needed (reference) |")
        lines.append("|---|---|---|---|")
        for name, rate in feeds.items():
            video = mvit.models.model_info(name).dataset.startswith("kinetics")
            r = next(x for x in results if x.pipeline == ("video train" if video else "image train"))
            per_item = 2 if video else 1  # a video item carries AUG.NUM_SAMPLE = 2 clips of the K400 recipe
            ref = [k for k in r.ratios][-1]
            ours_n = rate / (r.rates["ours"] * per_item)
            ref_n = rate / (r.rates[ref] * per_item)
            lines.append(f"| {name} | {rate:.2f} | {ours_n:.2f} | {ref_n:.2f} ({ref}) |")
        lines.append("")
    if profile:
        total = sum(profile.values())
        lines.append("Where a video training item's time goes (ours, ms of CPU time per item):\n")
        lines.append("| " + " | ".join(profile) + " | total |")
        lines.append("|" + "---|" * (len(profile) + 1))
        lines.append(
            "| " + " | ".join(f"{v:.1f} ({100 * v / total:.0f}%)" for v in profile.values()) + f" | {total:.1f} |"
        )
    lines.append("\nConditions: " + ", ".join(f"{k}: {v}" for k, v in info.items()))
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> str:
    """``--loader``: generate the data, time every pipeline, write OUT/loader.md and OUT/loader.json."""
    torch.set_num_threads(1)
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "threads": "1",
        "clock": "process CPU time",
        "torch": torch.__version__,
        "av": av.__version__,
        "Pillow": Image.__version__,
        "load average (1/5/15 min)": " / ".join(f"{v:.1f}" for v in os.getloadavg()),
    }
    results: List[LoaderResult] = []
    profile: Dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mvit_loader_") as tmp:
        tmp_path = Path(tmp)
        if "image" in args.loader_pipelines:
            make_images(tmp_path / "images", args.loader_images)
            for train in (True, False):
                steps, items = image_pipelines(tmp_path / "images", train)
                results.append(bench_pipelines(f"image {'train' if train else 'test'}", steps, args.rounds, 3 * items))
                print(markdown(results[-1:], {}, {}, {}).split("\n")[2])
        if "video" in args.loader_pipelines:
            data_dir, names = make_clips(tmp_path / "videos")
            info["clips"] = ", ".join(f"{n} ({(data_dir / n).stat().st_size / 1e6:.1f} MB)" for n in names)
            for train in (True, False):
                steps, items = video_pipelines(data_dir, train)
                results.append(
                    bench_pipelines(
                        f"video {'train' if train else 'test'}", steps, args.rounds, (2 if train else 1) * items
                    )
                )
                print("\n".join(markdown(results[-1:], {}, {}, {}).split("\n")[2:4]))
            profile = profile_video_item(data_dir)
    feeds = {}
    for spec in args.model_rate or []:  # MODEL=RATE, or MODEL alone: measured here (batch 8 images / 2 clips)
        name, _, rate = spec.partition("=")
        video = mvit.models.model_info(name).dataset.startswith("kinetics")
        feeds[name] = float(rate) if rate else model_train_rate(name, 2 if video else 8)
    info["load average after"] = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    text = markdown(results, profile, feeds, info)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loader.md").write_text(text)
    (args.out / "loader.json").write_text(
        json.dumps(
            {"conditions": info, "profile_ms": profile, "model_rates": feeds, "results": [asdict(r) for r in results]},
            indent=1,
        )
    )
    return text
