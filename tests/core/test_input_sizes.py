"""Inputs of another size than the build size work; at the build size the interpolation path is exact."""

import pytest
import torch

import mvit
from mvit.models import rel_pos


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
    x = torch.randn(2, 3, *model.config.input_size)
    with torch.no_grad():
        reference = model(x)
        monkeypatch.setattr(rel_pos, "resize_rel_pos", _always_interpolate)
        interpolated = model(x)
    assert torch.equal(reference, interpolated)


@pytest.fixture
def table_resizes(monkeypatch):
    """[(stored table length, length the forward needs)] of every rel-pos table lookup."""
    calls = []
    original = rel_pos.resize_rel_pos

    def recording(table, length):
        calls.append((table.shape[0], length))
        return original(table, length)

    monkeypatch.setattr(rel_pos, "resize_rel_pos", recording)
    return calls


@pytest.mark.parametrize(
    "name, build, other",
    [("mvitv2_s_16x4", (4, 64, 64), (6, 96, 64)), ("mvitv2_t", (64, 64), (96, 64))],
)
def test_zoo_tables_are_laid_out_for_the_grids_of_the_build_size(name, build, other, table_resizes):
    """Each table has the length ``2 * max(q_size, k_size) - 1`` of the q and k grids that the forward meets at
    the build size (zoo architectures at a small build size; every grid even, as at 224), and only at another
    size is one interpolated."""
    model = mvit.create_model(name, input_size=build).eval()
    tables = sum(p.ndim == 2 for n, p in model.named_parameters() if n.split(".")[-1].startswith("rel_pos_"))
    with torch.no_grad():
        model(torch.randn(1, 3, *build))
        assert len(table_resizes) == tables
        assert [stored for stored, _ in table_resizes] == [needed for _, needed in table_resizes]
        table_resizes.clear()
        model(torch.randn(1, 3, *other))
    assert len(table_resizes) == tables
    assert any(stored != needed for stored, needed in table_resizes)
