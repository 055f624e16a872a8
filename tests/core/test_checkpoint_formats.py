"""Every public checkpoint layout loads into the same model, detected automatically."""

import re

import pytest
import torch

from mvit.checkpoint import detect_format, load_checkpoint, save_weights
from tests.core.layouts import as_mmpretrain


def _as_timm(state, depths):
    starts = [sum(depths[:i]) for i in range(len(depths))]
    out = {}
    for k, v in state.items():
        m = re.match(r"blocks\.(\d+)\.(.*)", k)
        if m:
            i = int(m.group(1))
            s = max(j for j, start in enumerate(starts) if start <= i)
            rest = m.group(2).replace("proj.", "shortcut_proj_attn.") if m.group(2).startswith("proj.") else m.group(2)
            k = f"stages.{s}.blocks.{i - starts[s]}.{rest}"
        out[k.replace("head.projection.", "head.fc.")] = v
    return out


def _as_detectron2(state):
    return {"model": {f"backbone.bottom_up.{k}": v for k, v in state.items() if not k.startswith(("head.", "norm."))}}


@pytest.mark.parametrize(
    "fmt, wrap",
    [
        ("official", lambda s: {"model_state": s, "epoch": 300}),
        ("mmpretrain", as_mmpretrain),
        ("timm", lambda s: _as_timm(s, (1, 1, 2, 1))),
    ],
)
def test_formats_load_to_identical_weights(fmt, wrap, tmp_path, make_tiny, perturb):
    source = perturb(make_tiny())
    path = tmp_path / "w.pth"
    torch.save(wrap(source.state_dict()), path)
    target = make_tiny()
    report = load_checkpoint(target, str(path))
    assert report.format == fmt and report.ok
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name


def test_detectron2_backbone_part(tmp_path, make_tiny, perturb):
    source = perturb(make_tiny(num_classes=0, final_norm=False, out_norm=True))
    path = tmp_path / "d2.pth"
    torch.save(_as_detectron2(source.state_dict()), path)
    target = make_tiny(num_classes=0, final_norm=False, out_norm=True)
    report = load_checkpoint(target, str(path))
    assert report.format == "detectron2" and report.ok and "scale2_norm.weight" in report.loaded


def test_own_format_round_trip(tmp_path, make_tiny, perturb):
    source = perturb(make_tiny())
    save_weights(source, str(tmp_path / "own.pyth"))
    obj = torch.load(tmp_path / "own.pyth", weights_only=True)
    assert detect_format(obj["model"], "mvit") == "mvit" and obj["model_config"]["embed_dim"] == 16
    target = make_tiny()
    assert load_checkpoint(target, str(tmp_path / "own.pyth")).format == "mvit"
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(source.eval()(x), target.eval()(x))


def test_official_conv3d_kernels_with_one_frame_are_squeezed(tmp_path, make_tiny, perturb):
    source = perturb(make_tiny())
    state = {k: (v.unsqueeze(2) if v.ndim == 4 else v) for k, v in source.state_dict().items()}
    torch.save({"model_state": state}, tmp_path / "c3d.pyth")
    target = make_tiny()
    assert load_checkpoint(target, str(tmp_path / "c3d.pyth")).ok
    assert torch.equal(target.patch_embed.proj.weight, source.patch_embed.proj.weight)


def test_image_checkpoint_initialises_video_model_with_new_head(tmp_path, make_tiny, perturb):
    image = perturb(make_tiny(ndim=2, cls_embed_on=True))
    torch.save({"model_state": image.state_dict()}, tmp_path / "img.pyth")
    video = make_tiny(ndim=3, cls_embed_on=True, num_classes=7)
    with pytest.raises(Exception, match="does not match"):
        load_checkpoint(video, str(tmp_path / "img.pyth"))
    report = load_checkpoint(video, str(tmp_path / "img.pyth"), strict=False)
    assert any(r.startswith("patch_embed.proj.weight") for r in report.resized)
    assert "head.projection.weight" in [k for k, _, _ in report.mismatched]
    assert all("rel_pos_t" in k or k.startswith("head.") for k in report.missing)
    # A static clip gives the same patch embedding as the image it repeats (inflation rule).
    frame = torch.randn(1, 3, 32, 32)
    clip = frame.unsqueeze(2).repeat(1, 1, 4, 1, 1)
    with torch.no_grad():
        img_tokens = image.patch_embed.proj(frame)
        vid_tokens = video.patch_embed.proj(clip)
        # Interior frames see three identical frames of the kernel's temporal support.
        torch.testing.assert_close(vid_tokens[:, :, 1], img_tokens, atol=1e-5, rtol=1e-5)


def test_detectron2_model_zoo_pickle(tmp_path, make_tiny, perturb):
    import pickle

    source = perturb(make_tiny(num_classes=0, final_norm=False, out_norm=True))
    arrays = {k: v.numpy() for k, v in _as_detectron2(source.state_dict())["model"].items()}
    with open(tmp_path / "model_final.pkl", "wb") as f:
        pickle.dump({"model": arrays, "__author__": "Detectron2 Model Zoo"}, f)
    target = make_tiny(num_classes=0, final_norm=False, out_norm=True)
    report = load_checkpoint(target, str(tmp_path / "model_final.pkl"))
    assert report.format == "detectron2" and report.ok
    assert torch.equal(target.blocks[0].attn.rel_pos_h, source.blocks[0].attn.rel_pos_h)
