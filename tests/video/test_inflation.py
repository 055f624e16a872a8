"""An image checkpoint initialises a video model: 2-D kernels inflated over time, rel-pos tables resized."""

import pytest
import torch

from mvit.checkpoint import load_checkpoint, save_weights
from mvit.errors import CheckpointError
from mvit.models import MViT, MViTConfig


def _image_model() -> MViT:
    cfg = MViTConfig.from_stages(
        (1, 1, 2), input_size=(32, 32), kv_stride_adaptive=(2, 2), embed_dim=16, cls_embed_on=True, num_classes=10
    )
    return MViT(cfg)


def _video_model(size: int = 48) -> MViT:
    cfg = MViTConfig.from_stages(
        (1, 1, 2),
        input_size=(8, size, size),
        q_stride=(1, 2, 2),
        kv_stride_adaptive=(1, 2, 2),
        embed_dim=16,
        patch_kernel=(3, 7, 7),
        patch_stride=(2, 4, 4),
        patch_padding=(1, 3, 3),
        cls_embed_on=True,
        rel_pos_temporal=True,
        num_classes=6,
    )
    return MViT(cfg)


def test_image_checkpoint_initialises_a_video_model(tmp_path):
    torch.manual_seed(0)
    image = _image_model()
    with torch.no_grad():  # a table that is constant along the offsets must stay so when resized
        image.blocks[0].attn.rel_pos_h.copy_(torch.linspace(-1, 1, 16).expand_as(image.blocks[0].attn.rel_pos_h))
    path = str(tmp_path / "image.pyth")
    save_weights(image, path)

    video = _video_model()
    report = load_checkpoint(video, path, strict=False, log=False)

    resized = " ".join(report.resized)
    assert "patch_embed.proj.weight" in resized  # (16, 3, 7, 7) -> (16, 3, 3, 7, 7)
    assert "blocks.0.attn.rel_pos_h" in resized and "blocks.0.attn.rel_pos_w" in resized  # 15 -> 23 offsets
    assert "blocks.1.attn.pool_q.weight" in resized  # pooling kernels are inflated too
    assert any(k.endswith("attn.rel_pos_t") for k in report.missing)  # time has no image counterpart
    assert {k for k, _, _ in report.mismatched} == {"head.projection.weight", "head.projection.bias"}  # 10 vs 6

    # The inflated kernel is the image kernel spread evenly over its 3 frames ...
    w2d, w3d = image.patch_embed.proj.weight, video.patch_embed.proj.weight
    assert torch.allclose(w3d, w2d.unsqueeze(2).expand_as(w3d) / 3)
    # ... so a still clip gives the image response at every time step that sees 3 frames.
    frame = torch.randn(1, 3, 48, 48)
    still = frame.unsqueeze(2).expand(-1, -1, 8, -1, -1)
    with torch.no_grad():
        out3d = video.patch_embed.proj(still)  # (1, 16, 4, 12, 12)
        out2d = image.patch_embed.proj(frame)  # (1, 16, 12, 12)
    for t in range(1, out3d.shape[2]):  # t = 0 also sees the zero padding before frame 0
        assert torch.allclose(out3d[:, :, t], out2d, atol=1e-5)

    table = video.blocks[0].attn.rel_pos_h
    assert table.shape[0] == 2 * 12 - 1
    assert torch.allclose(table, table[:1].expand_as(table))  # still constant along the offsets
    assert torch.allclose(table[0], torch.linspace(-1, 1, 16))

    with torch.no_grad():
        logits = video(torch.randn(2, 3, 8, 48, 48))
    assert logits.shape == (2, 6) and torch.isfinite(logits).all()


def test_strict_load_refuses_an_image_checkpoint(tmp_path):
    path = str(tmp_path / "image.pyth")
    save_weights(_image_model(), path)
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_checkpoint(_video_model(), path, strict=True, log=False)
