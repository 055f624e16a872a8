#!/usr/bin/env python
"""Write a long H.264 test video: a bright square on a noisy background that moves right, left, up or down,
changing direction every few seconds (for tools/extract_features.py, tools/stream.py and their tests).

    python tools/make_test_video.py --out videos/long.mp4 --seconds 20 --size 320x240

x264's default group of pictures (a keyframe every 250 frames at most) as in real videos; the bytes depend only
on the arguments. The square on a still background costs almost nothing to decode; ``--scene photo`` writes a camera
panning over a photo with sensor noise at a Kinetics-like bit rate (tools/benchmark_loader.py's clips), whose
decoding costs what real videos cost (for speed measurements).
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

import av
import numpy as np

from mvit.errors import UserError, run_cli

__all__ = ["render_frames", "write_video"]

_DIRECTIONS = ((1, 0), (-1, 0), (0, -1), (0, 1))


def render_frames(seconds: float, width: int, height: int, fps: int, segment: float = 4.0, seed: int = 0):
    """Yield (height, width, 3) uint8 RGB frames; the direction of motion changes every ``segment`` seconds."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 100, (height, width, 3), dtype=np.uint8)
    side = max(4, min(width, height) // 6)
    x, y = width / 2, height / 2
    speed = min(width, height) / fps / 2  # half the short side per second
    for t in range(round(seconds * fps)):
        dx, dy = _DIRECTIONS[int(t / fps / segment) % len(_DIRECTIONS)]
        x, y = (x + dx * speed) % (width - side), (y + dy * speed) % (height - side)
        frame = background.copy()
        frame[int(y) : int(y) + side, int(x) : int(x) + side] = (230, 220, 60)
        yield frame


def write_video(path: str, seconds: float, width: int, height: int, fps: int = 30, seed: int = 0) -> str:
    """Encode the frames of :func:`render_frames` as H.264 (yuv420p) into ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "threads": "1", "mbtree": "0"}  # reproducible bytes (see make_motion_dataset)
        for frame in render_frames(seconds, width, height, fps, seed=seed):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the .mp4 file to write")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT, even numbers (default: %(default)s)")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scene", choices=("shapes", "photo"), default="shapes", help="(default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise UserError(f"--size {args.size}: expected WIDTHxHEIGHT, e.g. 320x240") from None
    if width % 2 or height % 2 or width < 8 or height < 8:
        raise UserError(f"--size {args.size}: H.264 in yuv420p needs even sizes of at least 8")
    if args.seconds <= 0 or args.fps <= 0:
        raise UserError("--seconds and --fps must be positive")
    if args.scene == "photo":
        from pathlib import Path

        from mvit.utils.cli import import_script

        here = os.path.dirname(os.path.abspath(__file__))
        make_clip = import_script(os.path.join(here, "benchmark_loader.py"), "benchmark_loader").make_clip

        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        make_clip(Path(args.out), "libx264", args.fps, width, height, args.seconds, args.seed)
        print(args.out)
        return 0
    print(write_video(args.out, args.seconds, width, height, args.fps, args.seed))
    return 0


if __name__ == "__main__":
    run_cli(main)
