"""Clip transforms apply one random draw to all frames; test views crop where PySlowFast does."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from projects.video.data.transforms import (
    ClipRandAugment,
    ClipRandomErasing,
    VideoEvalTransform,
    VideoTrainTransform,
)

MEAN, STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


def _still_clip(frames: int = 6, height: int = 40, width: int = 56, seed: int = 0) -> torch.Tensor:
    """(T, 3, H, W) uint8 clip whose frames are all the same random image."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, height, width), generator=g, dtype=torch.uint8).expand(frames, -1, -1, -1)


@pytest.mark.parametrize("seed", range(5))
def test_rand_augment_applies_the_same_ops_to_every_frame(seed):
    random.seed(seed)
    np.random.seed(seed)
    clip = _still_clip(seed=seed)
    out = ClipRandAugment("rand-m7-n4-mstd0.5-inc1", MEAN)(clip)
    assert out.shape == clip.shape and out.dtype == torch.uint8
    assert not torch.equal(out, clip)  # something was applied
    assert all(torch.equal(out[0], frame) for frame in out)  # ... and the same to every frame


def test_plain_timm_rand_augment_differs_per_frame():
    # The control: without the shared random state, frames of a still clip come out different.
    augment = ClipRandAugment("rand-m7-n4-mstd0.5-inc1", MEAN).transform
    random.seed(0)
    np.random.seed(0)
    frames = [np.asarray(augment(Image.fromarray(f.permute(1, 2, 0).numpy()))) for f in _still_clip()]
    assert any(not np.array_equal(frames[0], f) for f in frames[1:])


def test_rand_augment_output_equals_timm_own_ops():
    """The clip RandAugment runs mvit.data.augment's shears and translations: timm's bytes, frame for frame."""
    from timm.data.auto_augment import rand_augment_transform

    from mvit.data.augment import _STAND_INS

    ours = ClipRandAugment("rand-m9-n6-mstd0.5-inc1", MEAN)
    assert any(op.aug_fn in _STAND_INS.values() for op in ours.transform.ops)
    timm_own = rand_augment_transform("rand-m9-n6-mstd0.5-inc1", ours.hparams)
    video = torch.from_numpy(np.stack([np.asarray(p) for p in _sample_frames()])).permute(0, 3, 1, 2)
    for seed in range(20):
        random.seed(seed)
        np.random.seed(seed)
        got = ours(video)
        random.seed(seed)
        np.random.seed(seed)
        frame = Image.fromarray(video[0].permute(1, 2, 0).numpy())
        assert torch.equal(got[0], torch.from_numpy(np.asarray(timm_own(frame)).copy()).permute(2, 0, 1))


def _sample_frames() -> list:
    from sklearn.datasets import load_sample_images

    return [Image.fromarray(p).resize((120, 80)) for p in load_sample_images().images]


def test_random_erasing_erases_one_box_through_all_frames():
    random.seed(1)
    clip = torch.zeros(3, 5, 32, 32)
    ClipRandomErasing(probability=1.0, mode="pixel")(clip)
    erased = clip != 0
    assert erased.any()
    box = erased[0, 0]
    assert all(torch.equal(erased[c, t], box) for c in range(3) for t in range(5))  # same box everywhere
    assert not torch.equal(clip[:, 0], clip[:, 1])  # with fresh noise per frame


def test_train_transform_shapes_and_one_crop_per_clip():
    random.seed(0)
    torch.manual_seed(0)
    transform = VideoTrainTransform(
        crop_size=24, jitter_scales=(32, 40), mean=MEAN, std=STD, flip=True, rand_augment="rand-m7-n4-mstd0.5-inc1"
    )
    for _ in range(10):
        out = transform(_still_clip())
        assert out.shape == (3, 6, 24, 24) and out.dtype == torch.float32
        assert all(torch.equal(out[:, 0], out[:, t]) for t in range(6))  # crop, flip and RandAugment shared


def test_train_transform_normalises_with_mean_and_std():
    transform = VideoTrainTransform(
        crop_size=8, jitter_scales=(8, 8), mean=MEAN, std=STD, crop_scale=(), flip=False, rand_augment=""
    )
    out = transform(torch.full((2, 3, 8, 8), 255, dtype=torch.uint8))
    assert torch.allclose(out, torch.full_like(out, (1.0 - 0.45) / 0.225))


def test_random_crop_fallback_without_relative_scales():
    random.seed(0)
    torch.manual_seed(0)
    transform = VideoTrainTransform(crop_size=16, jitter_scales=(20, 30), mean=MEAN, std=STD, crop_scale=())
    assert transform(_still_clip(3, 40, 60)).shape == (3, 3, 16, 16)


@pytest.mark.parametrize("spatial_idx, x", [(0, 0), (1, 59), (2, 117)])
def test_eval_transform_crops_at_pyslowfast_offsets(spatial_idx, x):
    # Frames already at short side 256 are not resized, so the crop is a plain slice at (16, x).
    clip = torch.randint(0, 256, (4, 3, 256, 341), dtype=torch.uint8)
    out = VideoEvalTransform(short_side=256, crop_size=224, mean=MEAN, std=STD)(clip, spatial_idx)
    expected = (clip[..., 16 : 16 + 224, x : x + 224].float() / 255 - 0.45) / 0.225
    assert out.shape == (3, 4, 224, 224)
    assert torch.allclose(out, expected.permute(1, 0, 2, 3), atol=1e-6)


def test_eval_transform_resizes_short_side_first():
    transform = VideoEvalTransform(short_side=32, crop_size=32, mean=MEAN, std=STD)
    assert transform.crop_box(48, 64, 2) == (0, 10, 32, 32)  # resized to 32 x floor(64 * 32 / 48) = 42
    assert transform(torch.zeros(2, 3, 48, 64, dtype=torch.uint8), 2).shape == (3, 2, 32, 32)


def test_eval_transform_rejects_a_crop_larger_than_the_short_side():
    with pytest.raises(ValueError, match="smaller than the test crop"):
        VideoEvalTransform(short_side=200, crop_size=224, mean=MEAN, std=STD)


def test_rand_augment_survives_the_largest_magnitudes():
    # timm maps magnitude 10 of PosterizeIncreasing to 0 bits, which Pillow >= 11 rejects; m10 hits it often.
    random.seed(0)
    np.random.seed(0)
    augment = ClipRandAugment("rand-m10-n6-mstd0.5-inc1", MEAN)
    for seed in range(100):
        augment(_still_clip(2, 8, 8, seed=seed))


def test_a_bad_rand_augment_string_is_a_config_error_naming_the_key():
    from mvit.config import load_config
    from mvit.errors import ConfigError
    from projects.video.config import add_video_config
    from projects.video.data.kinetics import build_train_transform

    cfg = load_config(None, ["AUG.AA_TYPE", "rand-zz9"], extensions=[add_video_config])
    with pytest.raises(ConfigError, match=r"AUG\.AA_TYPE='rand-zz9'.*Unknown RandAugment"):
        build_train_transform(cfg)
