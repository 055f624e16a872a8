#!/usr/bin/env python
"""Features and class scores of sliding windows over long videos, each video decoded once.

    python tools/extract_features.py --cfg configs/DEMO/video_motion.yaml --random-weights \
        videos/long.mp4 --out features/ --stride 0.5

Inputs: video files, or csv files listing one video per line (the first field, comma or space separated;
relative paths are taken from the csv's folder; Kinetics csv files work as they are).

Windows: the model's clip (``DATA.NUM_FRAMES`` frames every ``DATA.SAMPLING_RATE`` at ``DATA.TARGET_FPS``, spanning
``NUM_FRAMES * SAMPLING_RATE * fps / TARGET_FPS`` frames of the video, as PySlowFast samples a clip) starting every
``--stride`` seconds (default: half a clip), the centre crop of the test transform. The video is decoded once, front
to back; each frame that some window samples is converted and transformed once, kept while a window still needs it,
and windows go through the model ``--batch`` at a time.

Outputs in ``--out``, per video ``<name>``: ``<name>.npz`` (``start``, ``end`` in seconds; ``features`` (W, C) the
pooled feature the head reads; ``scores`` (W, K) softmax; with ``--stage-maps`` ``stage<k>`` (W, C_k) each stage's
map averaged over space and time; ``class_names``), ``<name>.csv`` (start, end, top-k names and scores) and
``<name>.png`` (class scores over time); ``index.csv`` lists every video with its status. Videos whose npz exists
are skipped (resume after an interruption); a file that cannot be decoded is reported on one line and skipped.

``--benchmark``: windows per CPU-second of the input side (decode, sample, transform: what the model is fed) with
shared decoding and with each window decoded separately (a seek and a decode per window, by the project's
``VideoReader`` and by pytorchvideo's ``get_clip``), then end to end with the model (not with ``--decode-only``);
alternating rounds, median of per-round ratios; one thread (``--threads``) and one decoding thread; nothing is
written.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import time
from fractions import Fraction
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import av
import numpy as np
import torch
from tqdm import tqdm

from mvit.errors import DataError, UserError, report, run_cli
from mvit.utils.cli import ArgumentParser, import_script
from projects.video.data.decoding import ReferenceVideoReader, VideoDecodeError, VideoReader
from projects.video.data.kinetics import build_eval_transform

_explain = import_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "explain.py"))
add_model_args, load_model = _explain.add_model_args, _explain.load_model

__all__ = ["Window", "per_window_clips", "plan_windows", "shared_clips", "main"]


class Window:
    """One window: its sampled frame indices and its time span in seconds."""

    def __init__(self, indices: torch.Tensor, start: float, end: float) -> None:
        self.indices, self.start, self.end = indices, start, end
        self.first, self.last = int(indices.min()), int(indices.max())


def plan_windows(num_frames: int, fps: float, clip_frames: int, sampling_rate: int, target_fps: float, stride: float):
    """Windows over a video of ``num_frames`` frames at ``fps``: every ``stride`` seconds while a whole clip fits
    (at least one window; a video shorter than a clip repeats its last frame, as PySlowFast clamps)."""
    span = max(1.0, clip_frames * sampling_rate * fps / target_fps)  # frames one clip spans
    step = stride * fps
    count = max(1, math.floor((num_frames - span) / step + 1e-9) + 1)
    windows = []
    for k in range(count):
        start = k * step
        indices = torch.linspace(start, start + span - 1, clip_frames).clamp(0, num_frames - 1).long()
        windows.append(Window(indices, start / fps, (start + span) / fps))
    return windows


def _open(path: str) -> Tuple[int, float]:
    """Frame count and frame rate from the header (raises VideoDecodeError naming the file)."""
    with VideoReader(path) as reader:
        return reader.num_frames, float(reader.fps)


def _frame_index(pts: Optional[int], start_pts: int, frames_per_tick: Fraction, previous: int) -> int:
    """The frame number of a timestamp, as :meth:`VideoReader.span_pts` numbers frames (frame k starts at k / fps);
    a frame without a timestamp follows the previous one."""
    if pts is None:
        return previous + 1
    return math.floor((pts - start_pts) * frames_per_tick)


def shared_clips(
    path: str, windows: Sequence[Window], transform, decode_threads: bool = True
) -> Iterator[Tuple[int, torch.Tensor]]:
    """``(k, clip (C, T, S, S))`` of each window in order, decoding the video once front to back.

    Only the work the windows need is done: a packet whose frame no window samples is decoded only if other
    frames refer to it (FFmpeg's ``skip_frame = NONREF``, as :class:`VideoReader` skips the frames before a
    span); only sampled frames are converted to RGB; they are transformed as one batch per window emitted, once
    each, and dropped when no later window needs them. Frames are numbered by timestamp, as
    :meth:`VideoReader.get_frames` takes them, so the clips equal those of :func:`per_window_clips`. If the stream
    ends before the header's frame count, the missing frames repeat the last sampled one.
    """
    needed = {i for w in windows for i in w.indices.tolist()}
    frames: Dict[int, torch.Tensor] = {}  # transformed (C, S, S) frames still needed
    pending: List[Tuple[int, torch.Tensor]] = []  # RGB frames not yet transformed
    last: List[torch.Tensor] = []  # the last sampled frame, for a stream shorter than its header
    next_window, index = 0, -1

    def transform_pending() -> None:
        if pending:
            batch = transform(torch.stack([rgb for _, rgb in pending]))  # (C, n, S, S)
            for j, (i, _) in enumerate(pending):
                frames[i] = batch[:, j]
            last[:] = [batch[:, -1]]
            pending.clear()

    def clip(w: Window) -> torch.Tensor:
        transform_pending()
        return torch.stack([frames.get(i, last[0]) for i in w.indices.tolist()], dim=1)

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            if decode_threads:
                stream.thread_type = "AUTO"
            codec = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate
            if not rate or stream.time_base is None:
                raise VideoDecodeError(f"{path}: no frame rate in the header")
            frames_per_tick = Fraction(stream.time_base) * Fraction(rate)
            start_pts = stream.start_time or 0
            try:
                for packet in container.demux(stream):
                    wanted = packet.pts is None or _frame_index(packet.pts, start_pts, frames_per_tick, 0) in needed
                    codec.skip_frame = "DEFAULT" if wanted else "NONREF"
                    for frame in packet.decode():
                        index = _frame_index(frame.pts, start_pts, frames_per_tick, index)
                        if index in needed and index not in frames and all(i != index for i, _ in pending):
                            pending.append((index, torch.from_numpy(frame.to_rgb().to_ndarray()).permute(2, 0, 1)))
                        while next_window < len(windows) and windows[next_window].last <= index:
                            yield next_window, clip(windows[next_window])
                            next_window += 1
                            keep_from = windows[next_window].first if next_window < len(windows) else math.inf
                            for i in [i for i in frames if i < keep_from]:
                                del frames[i]
                        if next_window == len(windows):
                            return
            finally:
                codec.skip_frame = "DEFAULT"
    except (av.error.FFmpegError, OSError) as err:
        raise VideoDecodeError(f"{path}: cannot decode ({err})") from None
    transform_pending()
    if not last:
        raise VideoDecodeError(f"{path}: no frame decoded")
    for k in range(next_window, len(windows)):
        yield k, clip(windows[k])


def per_window_clips(path: str, windows: Sequence[Window], transform) -> Iterator[Tuple[int, torch.Tensor]]:
    """The same clips, each window decoded on its own (seek to the keyframe before it, decode its span)."""
    with VideoReader(path) as reader:
        for k, w in enumerate(windows):
            yield k, transform(reader.get_frames(w.indices))


@torch.no_grad()
def forward_windows(model, clips: torch.Tensor, stage_maps: bool) -> Dict[str, torch.Tensor]:
    """features (B, C), scores (B, K) and optionally stage<k> (B, C_k) of a batch of clips."""
    final, maps = model.forward_intermediates(clips)
    features = model.forward_head(final, pre_logits=True)
    out = {"features": features, "scores": model.head(features).float().softmax(dim=-1)}
    if stage_maps:
        for k, fmap in enumerate(maps):
            out[f"stage{k}"] = fmap.flatten(2).mean(dim=2)
    return out


def extract(model, cfg, path: str, stride: Optional[float], batch: int, stage_maps: bool, shared: bool = True):
    """(windows, {name: (W, ...) array}) of one video."""
    num_frames, fps = _open(path)
    data = cfg.DATA
    span_s = data.NUM_FRAMES * data.SAMPLING_RATE / data.TARGET_FPS
    windows = plan_windows(num_frames, fps, data.NUM_FRAMES, data.SAMPLING_RATE, data.TARGET_FPS, stride or span_s / 2)
    transform = build_eval_transform(cfg)
    source = shared_clips if shared else per_window_clips
    outputs: Dict[str, List[torch.Tensor]] = {}
    pending: List[torch.Tensor] = []

    def flush() -> None:
        for name, value in forward_windows(model, torch.stack(pending), stage_maps).items():
            outputs.setdefault(name, []).append(value)
        pending.clear()

    for _, clip in source(path, windows, transform):
        pending.append(clip)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    arrays = {name: torch.cat(values).float().numpy() for name, values in outputs.items()}
    return windows, arrays


def read_inputs(paths: Sequence[str]) -> List[str]:
    """Video paths from the arguments, csv files expanded (first field of each non-empty line)."""
    videos = []
    for path in paths:
        if not path.lower().endswith(".csv"):
            videos.append(path)
            continue
        if not os.path.isfile(path):
            raise UserError(f"{path}: file not found")
        root = os.path.dirname(os.path.abspath(path))
        with open(path) as f:
            for line in f:
                fields = line.replace(",", " ").split()
                if fields:
                    video = fields[0]
                    videos.append(video if os.path.isabs(video) or os.path.exists(video) else os.path.join(root, video))
    return videos


def write_outputs(stem: str, windows: Sequence[Window], arrays: Dict[str, np.ndarray], names: Sequence[str], topk: int):
    """``<stem>.npz`` (written under a temporary name, then renamed: a partial file never counts as done),
    ``<stem>.csv`` and ``<stem>.png``."""
    start = np.array([w.start for w in windows])
    end = np.array([w.end for w in windows])
    scores = arrays["scores"]
    k = min(topk, scores.shape[1])
    with open(stem + ".csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["start", "end"] + [c for r in range(1, k + 1) for c in (f"top{r}", f"score{r}")])
        for w, row in zip(windows, scores):
            top = np.argsort(-row, kind="stable")[:k]
            writer.writerow([f"{w.start:.3f}", f"{w.end:.3f}"] + [v for i in top for v in (names[i], f"{row[i]:.4f}")])
    plot_scores(stem + ".png", (start + end) / 2, scores, names, os.path.basename(stem))
    tmp = stem + ".partial.npz"
    np.savez(tmp, start=start, end=end, class_names=np.array(names), **arrays)
    os.replace(tmp, stem + ".npz")


def plot_scores(path: str, times: np.ndarray, scores: np.ndarray, names: Sequence[str], title: str, lines: int = 5):
    """Class scores over time: the ``lines`` classes with the highest peak score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.8))
    for i in np.argsort(-scores.max(axis=0), kind="stable")[:lines]:
        ax.plot(times, scores[:, i], marker=".", label=names[i])
    ax.set_xlabel("window centre (s)")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def _per_window_pytorchvideo(path: str, windows: Sequence[Window], transform) -> Iterator[Tuple[int, torch.Tensor]]:
    """Each window decoded on its own by pytorchvideo's ``EncodedVideoPyAV.get_clip`` (every frame of the span
    converted to RGB): what a tool built on a clip data set's reader does."""
    with ReferenceVideoReader(path) as reader:
        for k, w in enumerate(windows):
            yield k, transform(reader.get_frames(w.indices))


INPUT_PATHS: Dict[str, Callable] = {
    # One decoding thread, as the per-window readers (CPU time is compared).
    "shared decoding": lambda path, windows, transform: shared_clips(path, windows, transform, decode_threads=False),
    "per-window, VideoReader": per_window_clips,
    "per-window, pytorchvideo get_clip": _per_window_pytorchvideo,
}


def benchmark(
    model,
    cfg,
    videos: Sequence[str],
    stride: Optional[float],
    batch: int,
    rounds: int,
    max_windows: int,
    model_too: bool,
) -> None:
    """Print windows per CPU-second (this process's CPU time, all its threads) of the input side, shared vs each
    window decoded separately, and with ``model_too`` end to end; the variants alternate in rounds (the order
    flips every round) and each ratio is the median of the per-round ratios (the machine may be shared)."""
    data = cfg.DATA
    span_s = data.NUM_FRAMES * data.SAMPLING_RATE / data.TARGET_FPS
    transform = build_eval_transform(cfg)
    plans = []
    for path in videos:
        num_frames, fps = _open(path)
        windows = plan_windows(
            num_frames, fps, data.NUM_FRAMES, data.SAMPLING_RATE, data.TARGET_FPS, stride or span_s / 2
        )
        plans.append((path, windows[:max_windows] if max_windows else windows))
    count = sum(len(w) for _, w in plans)
    print(
        f"{len(plans)} video(s), {count} windows of {data.NUM_FRAMES} frames every {data.SAMPLING_RATE} at "
        f"{data.TARGET_FPS} fps, stride {stride or span_s / 2:.3f} s, crop {data.TEST_CROP_SIZE}"
    )

    def input_side(source: Callable) -> None:
        for path, windows in plans:
            for _ in source(path, windows, transform):
                pass

    def end_to_end(source: Callable) -> None:
        for path, windows in plans:
            pending = []
            for _, clip in source(path, windows, transform):
                pending.append(clip)
                if len(pending) == batch:
                    forward_windows(model, torch.stack(pending), False)
                    pending.clear()
            if pending:
                forward_windows(model, torch.stack(pending), False)

    tables = [("input side (decode + sample + transform)", input_side, list(INPUT_PATHS))]
    if model_too:
        tables.append((f"end to end (with the model, batch {batch})", end_to_end, list(INPUT_PATHS)[:2]))
    for title, run, names in tables:
        run(INPUT_PATHS[names[0]])  # warm-up: imports, first allocations
        per_round = []
        for r in range(rounds):
            row = {}
            for name in names if r % 2 == 0 else names[::-1]:
                cpu0, wall0 = time.process_time(), time.perf_counter()
                run(INPUT_PATHS[name])
                row[name] = (count / (time.process_time() - cpu0), count / (time.perf_counter() - wall0))
            per_round.append(row)
        print(f"\n{title}, {rounds} rounds\n")
        print("| path | windows / CPU-s | windows / wall-s | shared / this (CPU) |")
        print("|---|---:|---:|---:|")
        for name in names:
            cpu = statistics.median(row[name][0] for row in per_round)
            wall = statistics.median(row[name][1] for row in per_round)
            ratio = statistics.median(row[names[0]][0] / row[name][0] for row in per_round)
            print(f"| {name} | {cpu:.2f} | {wall:.2f} | {ratio:.2f}x |")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="video files or csv files of videos")
    parser.add_argument("--out", default="features", help="output folder (default: %(default)s)")
    parser.add_argument("--stride", type=float, help="seconds between window starts (default: half a clip)")
    parser.add_argument("--batch", type=int, default=8, help="windows per forward pass (default: %(default)s)")
    parser.add_argument("--stage-maps", action="store_true", help="also each stage's map pooled over space and time")
    parser.add_argument("--topk", type=int, default=5, help="classes per window in the csv (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--benchmark", action="store_true", help="shared vs per-window decoding speed, no output")
    parser.add_argument("--decode-only", action="store_true", help="--benchmark: the input side only, no model")
    parser.add_argument("--rounds", type=int, default=3, help="--benchmark: alternating rounds (default: %(default)s)")
    parser.add_argument("--max-windows", type=int, default=0, help="--benchmark: the first N windows of each video")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_args(parser)
    args = parser.parse_args(argv)
    if args.stride is not None and args.stride <= 0:
        raise UserError(f"--stride {args.stride}: must be positive (seconds)")
    if args.rounds < 1:
        raise UserError(f"--rounds {args.rounds}: must be at least 1")
    if args.batch < 1:
        raise UserError(f"--batch {args.batch}: must be at least 1")
    if args.threads or args.benchmark:  # the benchmark compares CPU time: one thread unless told
        torch.set_num_threads(args.threads or 1)
    videos = read_inputs(args.inputs)
    cfg, model, names = load_model(args)
    if "SAMPLING_RATE" not in cfg.DATA or len(cfg.MVIT.PATCH_KERNEL) != 3:
        raise UserError(f"{args.cfg_file}: not a video model config (3-D MVIT.PATCH_KERNEL and video DATA keys)")
    if args.benchmark:
        benchmark(model, cfg, videos, args.stride, args.batch, args.rounds, args.max_windows, not args.decode_only)
        return 0
    os.makedirs(args.out, exist_ok=True)
    rows, failed = [], 0
    stems: Dict[str, int] = {}
    for path in tqdm(videos, desc="videos", unit="video", disable=args.no_progress):
        name = os.path.splitext(os.path.basename(path))[0]
        stems[name] = stems.get(name, 0) + 1
        if stems[name] > 1:  # two videos of one name in different folders
            name = f"{name}_{stems[name] - 1}"
        stem = os.path.join(args.out, name)
        if os.path.isfile(stem + ".npz"):
            with np.load(stem + ".npz") as done:
                rows.append([path, name + ".npz", len(done["start"]), f"{done['end'][-1]:.3f}", "done earlier"])
            continue
        try:
            if not os.path.isfile(path):
                raise DataError(f"{path}: file not found")
            windows, arrays = extract(model, cfg, path, args.stride, args.batch, args.stage_maps)
        except DataError as err:
            failed += 1
            tqdm.write(f"skipped: {report(err)}", file=sys.stderr)
            rows.append([path, "", 0, "", f"error: {report(err)}"])
            continue
        write_outputs(stem, windows, arrays, names, args.topk)
        rows.append([path, name + ".npz", len(windows), f"{windows[-1].end:.3f}", "ok"])
    with open(os.path.join(args.out, "index.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "features", "windows", "end_seconds", "status"])
        writer.writerows(rows)
    print(
        f"{len(rows) - failed} of {len(rows)} videos -> {args.out}/ (index.csv)"
        + (f"; {failed} skipped" if failed else "")
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
