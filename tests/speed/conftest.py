"""Small models for the speed-path tests: fused attention, autocast, torch.compile and export."""

from __future__ import annotations

import pytest

from mvit.models import MViT, MViTConfig


def tiny_config(ndim: int = 2, **overrides) -> MViTConfig:
    """A 4-stage MViT small enough for a CPU test: 32x32 images or 4x32x32 clips (rel-pos T, H, W)."""
    base = dict(input_size=(32, 32), embed_dim=16, num_heads=1, num_classes=5)
    if ndim == 3:
        base.update(
            input_size=(4, 32, 32),
            patch_kernel=(3, 7, 7),
            patch_stride=(2, 4, 4),
            patch_padding=(1, 3, 3),
            q_stride=(1, 2, 2),
            kv_stride_adaptive=(1, 4, 4),
            rel_pos_temporal=True,
        )
    base.update(overrides)
    depths = base.pop("depths", (1, 1, 2, 1))
    return MViTConfig.from_stages(depths, **base)


@pytest.fixture
def make_model(perturb):
    """``make_model(ndim=2, **MViTConfig overrides)`` -> a perturbed tiny :class:`MViT`."""

    def make(ndim: int = 2, **overrides) -> MViT:
        return perturb(MViT(tiny_config(ndim, **overrides)), scale=0.05)

    return make
