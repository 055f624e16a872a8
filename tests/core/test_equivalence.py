"""Same logits as timm and torchvision on the same (perturbed, random) weights, loaded by the checkpoint module.

timm and torchvision are test dependencies only: the core never imports them.
"""

import pytest
import torch

import mvit


def _save(model, tmp_path, name):
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.mark.parametrize(
    "timm_name, ours, overrides",
    [
        ("mvitv2_tiny", "mvitv2_t", {}),
        # timm's class-token weights expect the legacy residual pooling that also adds to the class token.
        ("mvitv2_small_cls", "mvitv2_s", {"cls_embed_on": True, "residual_pooling_cls": True}),
    ],
)
def test_same_logits_as_timm(timm_name, ours, overrides, tmp_path, perturb):
    timm = pytest.importorskip("timm")
    reference = perturb(timm.create_model(timm_name)).eval()
    model = mvit.create_model(ours, checkpoint=_save(reference, tmp_path, timm_name), **overrides).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, actual = reference(x), model(x)
    assert (expected - actual).abs().max().item() <= 1e-5


def test_same_logits_as_torchvision_video(tmp_path, perturb):
    tv = pytest.importorskip("torchvision")
    reference = perturb(tv.models.video.mvit_v2_s()).eval()
    model = mvit.create_model("mvitv2_s_16x4", checkpoint=_save(reference, tmp_path, "tv")).eval()
    x = torch.randn(1, 3, 16, 224, 224)
    with torch.no_grad():
        expected, actual = reference(x), model(x)
    assert (expected - actual).abs().max().item() <= 1e-5


def test_explicit_and_fused_attention_agree_on_a_zoo_model():
    model = mvit.create_model("mvitv2_t").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        model.set_attn_impl("explicit")
        explicit = model(x)
        model.set_attn_impl("sdpa")
        fused = model(x)
    assert (explicit - fused).abs().max().item() <= 1e-5
