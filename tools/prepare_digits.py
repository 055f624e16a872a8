#!/usr/bin/env python
"""Lay out scikit-learn's handwritten digits as an ImageNet-style folder tree for the demo.

    python tools/prepare_digits.py --out data/digits

scikit-learn ships the 1,797 digits (8x8 pixels, 16 gray levels, 10 classes) inside its package, so nothing is
downloaded. They are split (stratified, fixed seed) into ``train/<digit>/*.png`` and a held-out
``val/<digit>/*.png``, as 8-bit grayscale PNGs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

__all__ = ["main", "prepare_digits"]


def prepare_digits(out: str, val_fraction: float = 0.2, seed: int = 0, progress: bool = True) -> dict[str, int]:
    """Write the digits under ``out`` and return the number of images per split.

    An existing, complete tree (same counts) is left as it is.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8), values 0..16 -> 0..255
    index = np.arange(len(images))
    train_idx, val_idx = train_test_split(index, test_size=val_fraction, random_state=seed, stratify=digits.target)
    splits = {"train": np.sort(train_idx), "val": np.sort(val_idx)}
    counts = {name: len(idx) for name, idx in splits.items()}
    if all(_count_pngs(os.path.join(out, name)) == n for name, n in counts.items()):
        return counts
    todo = [(name, i) for name, idx in splits.items() for i in idx]
    for name, i in tqdm(todo, desc="writing digits", disable=not (progress and sys.stdout.isatty())):
        folder = os.path.join(out, name, str(digits.target[i]))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(images[i]).save(os.path.join(folder, f"{i:04d}.png"))
    return counts


def _count_pngs(root: str) -> int:
    if not os.path.isdir(root):
        return -1
    return sum(f.endswith(".png") for _, _, files in os.walk(root) for f in files)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/digits", help="output folder (default: %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="held-out share (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default: %(default)s)")
    args = parser.parse_args(argv)
    counts = prepare_digits(args.out, args.val_fraction, args.seed)
    print(f"{args.out}: {counts['train']} training and {counts['val']} held-out images in 10 classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
