"""Batch mixup / cutmix: a clip's cutmix box spans every frame and pastes exactly the label weight; images are mixed
to timm's bytes under the same seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.data import Mixup

from mvit.config import get_cfg
from mvit.engine.mixup import BatchMixup
from mvit.engine.trainer import build_mixup


def _two_sample_batch(shape: tuple[int, ...]) -> torch.Tensor:
    """Sample 0 all zeros, sample 1 all ones: after cutmix, sample 0's ones are exactly the pasted voxels."""
    return torch.stack([torch.zeros(shape), torch.ones(shape)])


@pytest.mark.parametrize("clip", [(3, 8, 16, 12), (3, 5, 9, 13)])
def test_clip_cutmix_pastes_the_label_weight_into_every_frame(clip):
    np.random.seed(0)
    mixup = BatchMixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=2)
    labels = torch.tensor([0, 1])
    pasted, weights = [], []
    for _ in range(400):
        x, target = mixup(_two_sample_batch(clip), labels)
        mask = x[0] == 1  # (C, T, H, W)
        # One spatial box, the same in every channel and frame (PySlowFast's x[..., y0:y1, x0:x1]).
        assert torch.equal(mask, mask[:1, :1].expand_as(mask))
        assert torch.equal(x[1] == 0, mask)  # the pair swaps the same box
        pasted.append(mask.float().mean().item())
        weights.append(target[0, 1].item())
    pasted, weights = np.array(pasted), np.array(weights)
    np.testing.assert_allclose(pasted, weights, atol=1e-6)
    assert (pasted > 0).mean() > 0.9  # the draws did paste (the statistics are not of empty boxes)


def test_image_batches_are_mixed_to_timms_bytes():
    kwargs = dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.1, num_classes=10)
    ours, timms = BatchMixup(**kwargs), Mixup(**kwargs)
    gen = torch.Generator().manual_seed(0)
    for step in range(40):
        x = torch.randn(4, 3, 24, 20, generator=gen)
        labels = torch.randint(0, 10, (4,), generator=gen)
        np.random.seed(step)
        x_ours, t_ours = ours(x.clone(), labels)
        np.random.seed(step)
        x_timm, t_timm = timms(x.clone(), labels)
        assert torch.equal(x_ours, x_timm) and torch.equal(t_ours, t_timm)


def test_clip_mixup_blends_whole_clips():
    np.random.seed(1)
    mixup = BatchMixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=2)
    x, target = mixup(_two_sample_batch((3, 4, 8, 8)), torch.tensor([0, 1]))
    torch.testing.assert_close(x[0], torch.full_like(x[0], target[0, 1].item()))


def test_engine_builds_the_frame_consistent_mixup():
    cfg = get_cfg()
    assert isinstance(build_mixup(cfg), BatchMixup)
    with pytest.raises(ValueError, match="mode='batch'"):
        BatchMixup(mode="elem")
