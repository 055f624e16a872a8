"""The accelerated ImageNet transforms (mvit.data.augment) give timm's bytes: whole training and test pipelines
against timm's ``create_transform`` under the same random state, equal tensors, not close ones."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from mvit.config import load_config
from mvit.data import augment as fast
from projects.classification import add_classification_config
from projects.classification.data import _timm_transform, build_transform


def _photos() -> list[Image.Image]:
    noise = np.random.default_rng(0).integers(0, 256, (97, 131, 3), dtype=np.uint8)
    return [Image.fromarray(p) for p in load_sample_images().images] + [Image.fromarray(noise)]


def _seed(i: int) -> None:
    random.seed(i)
    np.random.seed(i)  # RandAugment picks its ops with numpy
    torch.manual_seed(i)


@pytest.mark.parametrize(
    "overrides",
    [
        [],  # the IN1K recipe: rand-m9-n6-mstd0.5-inc1, bicubic, random erasing 0.25
        ["AUG.AA_TYPE", "rand-m15-n4-mstd1.0", "AUG.INTERPOLATION", "random"],  # random filter draws
        ["AUG.AA_TYPE", "original"],  # AutoAugment's policies
    ],
    ids=["in1k", "random-filter", "autoaugment"],
)
def test_training_pipeline_equals_timm(overrides):
    cfg = load_config(None, ["DATA.TRAIN_CROP_SIZE", "64", *overrides], extensions=[add_classification_config])
    ours, timm_own = build_transform(cfg, is_training=True), _timm_transform(cfg, is_training=True)
    assert any(isinstance(t, fast.ToNormalizedTensor) for t in ours.transforms)
    augment = next(t for t in ours.transforms if hasattr(t, "ops") or hasattr(t, "policy"))
    ops = list(getattr(augment, "ops", [])) + [op for sub in getattr(augment, "policy", []) for op in sub]
    assert any(op.aug_fn in fast._STAND_INS.values() for op in ops)  # the stand-ins are in use
    photos = _photos()
    for i in range(60):
        _seed(i)
        want = timm_own(photos[i % len(photos)])
        _seed(i)
        got = ours(photos[i % len(photos)])
        assert torch.equal(got, want), f"item {i}"


def test_test_pipeline_equals_timm():
    cfg = load_config(None, [], extensions=[add_classification_config])
    ours, timm_own = build_transform(cfg, is_training=False), _timm_transform(cfg, is_training=False)
    for img in _photos():
        assert torch.equal(ours(img), timm_own(img))


@pytest.mark.parametrize("is_training", [True, False])
def test_a_bad_augmentation_string_is_a_config_error_naming_the_keys(is_training):
    from mvit.errors import ConfigError

    overrides = ["AUG.AA_TYPE", "rand-zz9"] if is_training else ["AUG.INTERPOLATION", "no_such_filter"]
    cfg = load_config(None, overrides, extensions=[add_classification_config])
    with pytest.raises(ConfigError, match=r"AUG\.AA_TYPE=.*AUG\.INTERPOLATION="):
        build_transform(cfg, is_training=is_training)
