"""MViTBackbone against detectron2's own MViT: same layout, same parameters, same features."""

import glob
import os
from functools import partial
from unittest import mock

import pytest
import torch
from torch import nn

pytest.importorskip("detectron2.modeling", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.modeling.backbone.mvit import MViT as Detectron2MViT  # noqa: E402

from mvit.checkpoint import load_checkpoint  # noqa: E402
from projects.detection.backbone import MViTBackbone, detectron2_block_layout  # noqa: E402

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "projects", "detection", "configs")
RECIPES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIG_DIR, "*mvitv2_*.py")) if "demo" not in p)
TINY = dict(embed_dim=96, depth=10, num_heads=1, last_block_indexes=(0, 2, 7, 9), drop_path_rate=0.2)


def detectron2_mvit(meta: bool = False, **kwargs) -> Detectron2MViT:
    """detectron2's MViT with the LayerNorm eps of the MViTv2 configs (on the meta device if asked)."""
    kwargs = {k: v for k, v in kwargs.items() if k not in ("_target_", "norm_eps", "use_act_checkpoint")}
    build = partial(Detectron2MViT, norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs)
    if not meta:
        return build()
    linspace = torch.linspace  # its drop-path schedule calls .item(), which meta tensors cannot do
    with torch.device("meta"), mock.patch("torch.linspace", lambda *a, **k: linspace(*a, **k, device="cpu")):
        return build()


def test_recipes_are_all_there():
    assert "mask_rcnn_mvitv2_t_3x.py" in RECIPES
    for size in "tsb":
        assert f"cascade_mask_rcnn_mvitv2_{size}_3x.py" in RECIPES
    assert any("_l_" in r for r in RECIPES) and any("_h_" in r for r in RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_backbone_has_detectron2_parameters(recipe):
    """Every recipe's backbone has exactly detectron2's parameter names and shapes (so its weights load)."""
    cfg = LazyConfig.load(os.path.join(CONFIG_DIR, recipe))
    with torch.device("meta"):
        ours = instantiate(cfg.model.backbone.bottom_up)
    ref = detectron2_mvit(meta=True, **cfg.model.backbone.bottom_up)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    for i, (a, b) in enumerate(zip(ours.blocks, ref.blocks)):
        assert a.attn.window_size == b.attn.window_size, f"block {i}"
        assert a.attn.pool_q.stride == b.attn.pool_q.stride, f"block {i}"
        assert a.attn.pool_k.stride == b.attn.pool_k.stride, f"block {i}"
        assert getattr(a.drop_path, "drop_prob", 0.0) == pytest.approx(getattr(b.drop_path, "drop_prob", 0.0))


def test_block_layout_of_tiny():
    layout = detectron2_block_layout(10, (0, 2, 7, 9))
    assert layout["window_size"] == [56, 56, 0, 28, 14, 14, 14, 0, 14, 0]
    assert layout["kv_stride"] == [4, 2, 4, 1, 1, 1, 1, 2, 1, 1]
    assert layout["q_stride"] == [1, 2, 1, 2, 1, 1, 1, 1, 2, 1]
    with pytest.raises(ValueError, match="last_block_indexes"):
        detectron2_block_layout(10, (0, 2, 7, 8))


@pytest.fixture(scope="module")
def copied_pair(tmp_path_factory, perturb):
    """detectron2's MViTv2-T with every parameter perturbed, and ours loaded from its detectron2 checkpoint."""
    torch.manual_seed(0)
    ref = perturb(detectron2_mvit(**TINY).eval())  # zero-initialised rel-pos tables and biases become non-zero
    path = tmp_path_factory.mktemp("d2") / "model_final.pth"
    torch.save({"model": {f"backbone.bottom_up.{k}": v for k, v in ref.state_dict().items()}}, path)
    ours = MViTBackbone(**TINY).eval()
    report = load_checkpoint(ours, str(path), strict=True, log=False)
    assert report.format == "detectron2" and report.ok
    return ref, ours


@pytest.mark.parametrize("size", [(512, 512), (480, 640)])
def test_features_equal_detectron2(copied_pair, size):
    ref, ours = copied_pair
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert list(got) == ["scale2", "scale3", "scale4", "scale5"]
    for name, stride in zip(got, (4, 8, 16, 32)):
        assert (
            got[name].shape
            == expected[name].shape
            == (1, ours.output_shape()[name].channels, size[0] // stride, size[1] // stride)
        )
        assert (got[name] - expected[name]).abs().max().item() <= 1e-5, name


def test_output_shape_and_feature_subset():
    model = MViTBackbone(embed_dim=16, depth=4, last_block_indexes=(0, 1, 2, 3), out_features=("scale3", "scale5"))
    shapes = model.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {"scale3": (32, 8), "scale5": (128, 32)}
    out = model(torch.randn(2, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"scale3": (2, 32, 8, 12), "scale5": (2, 128, 2, 3)}
    sum(v.sum() for v in out.values()).backward()
    # Only the norms of requested outputs exist, so every parameter is used (DDP needs no unused-parameter search).
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="scale6"):
        MViTBackbone(embed_dim=16, depth=4, last_block_indexes=(0, 1, 2, 3), out_features=("scale6",))
