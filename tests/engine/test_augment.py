"""mvit.data.augment gives Pillow's and torchvision's bytes: every shear and translation through the C kernel
against Pillow's own ``Image.transform`` (sizes, filters, fills, offsets that move the image off the canvas), other
matrices and modes through Pillow, and the normalisation table against ToTensor + Normalize."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from timm.data import create_transform

from mvit.data import augment as fast

FILLS = ((124, 116, 104), None, 7, "red")


def _photos() -> list[Image.Image]:
    """The two sample photos (640x427) and a noise image: smooth areas, edges, and pixel-level detail."""
    noise = np.random.default_rng(0).integers(0, 256, (97, 131, 3), dtype=np.uint8)
    return [Image.fromarray(p) for p in load_sample_images().images] + [Image.fromarray(noise)]


def test_the_kernel_is_built():
    """The documented install (``pip install -e .``) builds it; without it everything still works, through Pillow."""
    assert fast._affine is not None, "mvit/data/_affine.c is not built: run pip install -e ."


@pytest.mark.parametrize("resample", [Image.Resampling.BICUBIC, Image.Resampling.BILINEAR])
def test_shears_and_translations_equal_pillow(resample):
    rng = random.Random(int(resample))
    photos = _photos()
    for trial in range(240):
        width, height = rng.choice([(224, 224), (31, 57), (1, 1), (2, 5), (300, 200)])
        img = photos[trial % len(photos)].resize((width, height), Image.Resampling.BILINEAR)
        f = rng.gauss(0.0, 0.3) if trial % 7 else rng.choice([0.0, 1.0, -2.0, 0.5, 3.0])  # exact pixel offsets too
        matrix = [
            (1, f, 0, 0, 1, 0),  # ShearX
            (1, 0, 0, f, 1, 0),  # ShearY
            (1, 0, f * width, 0, 1, 0),  # TranslateX (beyond the image when |f| > 1)
            (1, 0, 0, 0, 1, f * height),  # TranslateY
            (1, f, 2.5, 0, 1, 0),  # both at once
        ][trial % 5]
        fill = FILLS[trial % len(FILLS)]
        want = img.transform(img.size, Image.Transform.AFFINE, matrix, resample=resample, fillcolor=fill)
        got = fast.affine_transform(img, matrix, resample, fill)
        assert got.mode == "RGB" and got.size == img.size
        assert got.tobytes() == want.tobytes(), f"trial {trial}: {matrix}, {width}x{height}, fill {fill!r}"


@pytest.mark.parametrize("resample", [Image.Resampling.BICUBIC, Image.Resampling.BILINEAR])
def test_rotations_equal_pillow(resample):
    """Any other matrix takes the kernel's 2-D path; timm's rotate op goes through Pillow's own ``rotate``."""
    rng = random.Random(10 + int(resample))
    photos = _photos()
    for trial in range(120):
        width, height = rng.choice([(224, 224), (31, 57), (1, 1), (300, 200)])
        img = photos[trial % len(photos)].resize((width, height), Image.Resampling.BILINEAR)
        angle = rng.choice([rng.uniform(-30.0, 30.0), 0.0, 90.0, 180.0, -90.0, 45.0])
        fill = FILLS[trial % len(FILLS)]
        want = img.rotate(angle, resample=resample, fillcolor=fill)
        assert fast._rotate(img, angle, resample=resample, fillcolor=fill).tobytes() == want.tobytes(), trial
        a = math.radians(angle)
        matrix = (math.cos(a), math.sin(a), rng.uniform(-5, 5), -math.sin(a), math.cos(a), rng.uniform(-5, 5))
        want = img.transform(img.size, Image.Transform.AFFINE, matrix, resample=resample, fillcolor=fill)
        assert fast.affine_transform(img, matrix, resample, fill).tobytes() == want.tobytes(), trial


def test_other_modes_and_filters_go_to_pillow():
    img = _photos()[0].resize((64, 48))
    shear = (1, 0.2, 0, 0, 1, 0)
    gray = img.convert("L")
    got = fast.affine_transform(gray, shear, Image.Resampling.BICUBIC, 9)
    want = gray.transform(gray.size, Image.Transform.AFFINE, shear, Image.Resampling.BICUBIC, fillcolor=9)
    assert got.mode == "L" and got.tobytes() == want.tobytes()
    nearest = fast.affine_transform(img, shear, Image.Resampling.NEAREST)
    want = img.transform(img.size, Image.Transform.AFFINE, shear, Image.Resampling.NEAREST)
    assert nearest.tobytes() == want.tobytes()


def test_kernel_refuses_what_it_does_not_compute():
    if fast._affine is None:
        pytest.skip("kernel not built (test_the_kernel_is_built says so)")
    src, out = bytes(12), bytearray(12)
    with pytest.raises(ValueError, match="smaller"):
        fast._affine.affine_rgb(src, 4, 4, out, 2, 2, (1.0, 0.1, 0.0, 0.0, 1.0, 0.0), 3)
    with pytest.raises(ValueError, match="finite"):
        fast._affine.affine_rgb(src, 2, 2, out, 2, 2, (1.0, float("nan"), 0.0, 0.0, 1.0, 0.0), 3)
    with pytest.raises(ValueError, match="filter"):
        fast._affine.affine_rgb(src, 2, 2, out, 2, 2, (1.0, 0.1, 0.0, 0.0, 1.0, 0.0), 0)


def test_normalized_tensor_table_equals_to_tensor_and_normalize():
    reference = create_transform(224, is_training=False)
    to_tensor, normalize = reference.transforms[-2], reference.transforms[-1]
    table = fast.ToNormalizedTensor(to_tensor, normalize)
    assert table.table is not None  # the probe agreed in every position
    every_value = Image.fromarray(np.arange(256 * 3, dtype=np.uint16).reshape(16, 16, 3).astype(np.uint8) ^ 0x5A)
    for img in [every_value, *_photos()]:
        assert torch.equal(table(img), normalize(to_tensor(img)))
    array = np.array(_photos()[0])  # not a PIL image: the two transforms themselves
    assert torch.equal(table(array), normalize(to_tensor(array)))
