"""Generate a small motion data set as real mp4 files, in Kinetics csv layout.

Each clip shows one asymmetric shape on a textured background. Its class is how the shape moves: translating
right, left, up or down, or rotating clockwise or counter-clockwise. The scene is a torus (a shape leaving on
one side re-enters on the other) and the position and orientation are uniform, so every single frame has the
same distribution in every class: no single frame tells the class, only the motion does.

Usage::

    python projects/video/tools/make_motion_dataset.py --out data/motion [--num-train 600 --num-val 120]

writes ``train/*.mp4``, ``val/*.mp4``, ``train.csv``, ``val.csv``, ``test.csv`` (= val) with rows
``<path relative to --out> <label>``, and ``classes.txt``. The files depend only on ``--seed``.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import List, Sequence, Tuple

import av
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

__all__ = ["CLASSES", "make_motion_dataset", "render_clip", "write_mp4"]

CLASSES = ("right", "left", "up", "down", "clockwise", "counterclockwise")
_DIRECTIONS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
# Unit-radius outlines without rotational symmetry, so a rotation has one direction (an isosceles
# triangle, an L and an arrow head).
_SHAPES = (
    [(0.0, -1.0), (0.55, 0.8), (-0.55, 0.8)],
    [(-0.7, -1.0), (-0.1, -1.0), (-0.1, 0.4), (0.8, 0.4), (0.8, 1.0), (-0.7, 1.0)],
    [(0.0, -1.0), (0.9, 0.9), (0.0, 0.35), (-0.9, 0.9)],
)
_SUPERSAMPLE = 4  # shapes are drawn 4x larger and box-filtered down: sub-pixel motion stays smooth


def _polygon(shape: Sequence[Tuple[float, float]], cx: float, cy: float, radius: float, angle: float) -> list:
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos)) for x, y in shape]


def render_clip(label: int, rng: np.random.Generator, size: int = 32, num_frames: int = 32) -> np.ndarray:
    """Frames of one clip of class ``CLASSES[label]``.

    Returns:
        (num_frames, size, size, 3) uint8 RGB.
    """
    name = CLASSES[label]
    big = size * _SUPERSAMPLE
    background = rng.integers(0, 120, 3)
    texture = rng.normal(0, 12, (size, size, 1)) + rng.normal(0, 6, (size, size, 3))
    base = np.clip(background + texture, 0, 255).astype(np.uint8)
    color = tuple(int(c) for c in rng.integers(150, 256, 3))
    shape = _SHAPES[rng.integers(len(_SHAPES))]
    radius = rng.uniform(0.18, 0.28) * big
    cx, cy = rng.uniform(0, big, 2)
    angle = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(0.75, 1.5) * _SUPERSAMPLE  # pixels per frame
    spin = math.radians(rng.uniform(15.0, 30.0))  # radians per frame; clockwise on screen is +angle (y down)
    dx, dy = _DIRECTIONS.get(name, (0.0, 0.0))

    frames = []
    for t in range(num_frames):
        x, y = (cx + dx * speed * t) % big, (cy + dy * speed * t) % big
        a = angle + (spin * t if name == "clockwise" else -spin * t if name == "counterclockwise" else 0.0)
        mask = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(mask)
        for ox in (-big, 0, big):  # draw the wrapped copies too: the scene is a torus
            for oy in (-big, 0, big):
                draw.polygon(_polygon(shape, x + ox, y + oy, radius, a), fill=255)
        alpha = np.asarray(mask.resize((size, size), Image.BOX), dtype=np.float32)[..., None] / 255.0
        frames.append((base * (1 - alpha) + np.asarray(color, np.float32) * alpha).round().astype(np.uint8))
    return np.stack(frames)


def write_mp4(path: str, frames: np.ndarray, fps: int = 30) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames as H.264 (yuv420p) in an mp4 file (even H and W)."""
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        # x264's macroblock-tree rate control (and frame threads) gave different bytes on some runs of the
        # same frames here; without them the files are identical run after run.
        stream.options = {"crf": "12", "threads": "1", "mbtree": "0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_motion_dataset(
    out: str,
    num_train: int = 600,
    num_val: int = 120,
    size: int = 32,
    num_frames: int = 32,
    fps: int = 30,
    seed: int = 0,
    progress: bool = True,
) -> List[str]:
    """Write the clips and csv files under ``out``; return the csv paths (train, val, test).

    Labels cycle through the classes, so every split is balanced; clip ``i`` of a split is drawn from its
    own generator seeded with ``(seed, split, i)``.
    """
    if size % 2:
        raise ValueError(f"H.264 in yuv420p needs an even frame size, got {size}")
    csvs = []
    rows_by_split = {}
    for split_id, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        os.makedirs(os.path.join(out, split), exist_ok=True)
        rows = []
        for i in tqdm(range(count), desc=f"motion {split}", disable=not progress):
            label = i % len(CLASSES)
            rng = np.random.default_rng([seed, split_id, i])
            relative = f"{split}/{i:05d}.mp4"
            write_mp4(os.path.join(out, relative), render_clip(label, rng, size, num_frames), fps)
            rows.append(f"{relative} {label}\n")
        rows_by_split[split] = rows
    rows_by_split["test"] = rows_by_split["val"]
    for split, rows in rows_by_split.items():
        path = os.path.join(out, f"{split}.csv")
        with open(path, "w") as f:
            f.writelines(rows)
        csvs.append(path)
    with open(os.path.join(out, "classes.txt"), "w") as f:
        f.writelines(f"{name}\n" for name in CLASSES)
    return csvs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-train", type=int, default=600)
    parser.add_argument("--num-val", type=int, default=120)
    parser.add_argument("--size", type=int, default=32, help="frame height and width (even)")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make_motion_dataset(args.out, args.num_train, args.num_val, args.size, args.frames, args.fps, args.seed)
    print(f"wrote {args.num_train} train and {args.num_val} val clips of {len(CLASSES)} classes to {args.out}")


if __name__ == "__main__":
    main()
