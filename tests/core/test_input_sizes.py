"""Inputs of another size than the build size work; at the build size the interpolation path is exact."""

import pytest
import torch

import mvit
from mvit.models import attention


@pytest.mark.parametrize("size", [(256, 256), (224, 320)])
def test_image_model_runs_on_other_sizes(size):
    model = mvit.create_model("mvitv2_t").eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, *size))
        feats = model.forward_multiscale(torch.randn(1, 3, *size))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    assert feats["scale2"].shape[-2:] == (size[0] // 4, size[1] // 4)
    assert feats["scale5"].shape[-2:] == (size[0] // 32, size[1] // 32)


@pytest.mark.parametrize("frames", [8, 32])
def test_video_model_runs_on_other_clip_lengths(frames, make_tiny):
    model = make_tiny(ndim=3, input_size=(16, 32, 32)).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, frames, 32, 32))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()


def _always_interpolate(table, length):
    return torch.nn.functional.interpolate(table.t().unsqueeze(0), size=length, mode="linear").squeeze(0).t()


@pytest.mark.parametrize("ndim, overrides", [(2, {}), (3, {"input_size": (16, 32, 32)}), (2, {"use_abs_pos": True})])
def test_interpolation_path_is_identity_at_build_size(ndim, overrides, make_tiny, perturb, monkeypatch):
    model = perturb(make_tiny(ndim=ndim, **overrides)).eval()
    x = torch.randn(2, 3, *model.cfg.input_size)
    with torch.no_grad():
        reference = model(x)
        monkeypatch.setattr(attention, "resize_rel_pos", _always_interpolate)
        interpolated = model(x)
    assert torch.equal(reference, interpolated)


def test_zoo_video_model_at_build_size_uses_tables_as_stored():
    model = mvit.create_model("mvitv2_s_16x4")
    for blk in model.blocks:
        attn = blk.attn
        q_grid = blk.attn.rel_pos_h.shape[0]
        assert q_grid % 2 == 1
        assert attn.rel_pos_t.shape[0] == 2 * 8 - 1  # 16 frames / temporal patch stride 2
