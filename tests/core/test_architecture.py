"""Architecture details that released weights depend on."""

import pytest
import torch
from torch import nn

import mvit
from mvit.models import MViT, MViTConfig


def test_adaptive_kv_stride_shrinks_in_the_block_that_pools_q():
    # Official behaviour (SlowFast issue 669): block 1 pools q by 2 AND already uses kv stride 4 / 2 = 2.
    specs = MViTConfig.from_stages((1, 2, 5, 2)).block_specs()
    assert [s.stride_q for s in specs[:4]] == [(1, 1), (2, 2), (1, 1), (2, 2)]
    assert [s.stride_kv for s in specs[:4]] == [(4, 4), (2, 2), (2, 2), (1, 1)]
    # kv stride 1 still pools with the 3x3 kernel (the released weights have these convs).
    assert specs[3].kernel_kv == (3, 3)


def test_video_strides_keep_time():
    specs = mvit.resolve_config("mvitv2_s_16x4").block_specs()
    assert specs[0].stride_kv == (1, 8, 8) and specs[1].stride_q == (1, 2, 2) and specs[1].stride_kv == (1, 4, 4)
    assert specs[0].input_size == (8, 56, 56)


def test_dim_mul_in_attention_or_mlp():
    in_att = MViTConfig.from_stages((1, 2, 5, 2)).block_specs()
    in_mlp = MViTConfig.from_stages((1, 2, 5, 2), dim_mul_in_att=False).block_specs()
    # The width changes in the first block of a stage (attention) or in the last block before it (MLP).
    assert (in_att[1].dim, in_att[1].dim_out) == (96, 192)
    assert (in_mlp[0].dim, in_mlp[0].dim_out) == (96, 192) and in_mlp[1].dim == 192


@pytest.mark.parametrize("zero", [True, False])
def test_rel_pos_init(zero, make_tiny):
    model = make_tiny(rel_pos_zero_init=zero)
    table = model.blocks[0].attn.rel_pos_h
    assert (table.abs().sum().item() == 0) is zero


def test_layernorm_eps_and_head_without_softmax(make_tiny):
    model = make_tiny().eval()
    assert all(m.eps == 1e-6 for m in model.modules() if isinstance(m, nn.LayerNorm))
    logits = model(torch.randn(3, 3, 32, 32))
    assert not torch.allclose(logits.softmax(1).sum(1), logits.sum(1))


def test_class_token_head_reads_the_class_token(make_tiny):
    model = make_tiny(cls_embed_on=True).eval()
    tokens = model.forward_features(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens[:, 0])


def test_residual_pooling_class_token_behaviours_differ(make_tiny, perturb):
    current = perturb(make_tiny(cls_embed_on=True)).eval()
    legacy = make_tiny(cls_embed_on=True, residual_pooling_cls=True).eval()
    legacy.load_state_dict(current.state_dict())
    x = torch.randn(1, 3, 32, 32)
    assert not torch.allclose(current(x), legacy(x))


def test_drop_path_schedule_is_linear():
    specs = MViTConfig.from_stages((1, 2, 5, 2), drop_path_rate=0.1).block_specs()
    assert [round(s.drop_path, 6) for s in specs] == [round(0.1 * i / 9, 6) for i in range(10)]


def test_no_weight_decay_names_cover_tables_embeddings_and_class_token(make_tiny):
    model = make_tiny(cls_embed_on=True, use_abs_pos=True)
    names = model.no_weight_decay()
    assert {"cls_token", "pos_embed", "blocks.0.attn.rel_pos_h", "blocks.4.attn.rel_pos_w"} <= names
    assert not any(n.endswith(".weight") for n in names)


def test_multiscale_outputs(make_tiny):
    model = make_tiny(num_classes=0, out_norm=True).eval()
    feats = model.forward_multiscale(torch.randn(1, 3, 64, 64))
    assert [f["name"] for f in model.feature_info] == ["scale2", "scale3", "scale4", "scale5"]
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "scale2": (1, 16, 16, 16),
        "scale3": (1, 32, 8, 8),
        "scale4": (1, 64, 4, 4),
        "scale5": (1, 128, 2, 2),
    }


def test_block_specs_carry_every_block_flag_to_the_modules(make_tiny_config):
    config = make_tiny_config(
        cls_embed_on=True, qkv_bias=False, mode="max", norm_eps=1e-5, mlp_ratio=2.0, attn_impl="explicit"
    )
    specs = config.block_specs()
    assert {(s.has_cls, s.qkv_bias, s.mode, s.norm_eps, s.mlp_ratio, s.attn_impl) for s in specs} == {
        (True, False, "max", 1e-5, 2.0, "explicit")
    }
    model = MViT(config)
    for spec, blk in zip(specs, model.blocks):
        assert blk.attn.qkv.bias is None and blk.attn.has_cls and blk.attn.attn_impl == "explicit"
        assert isinstance(blk.attn.pool_k, nn.MaxPool2d) and blk.attn.norm_k is None
        assert blk.norm1.eps == 1e-5 and blk.mlp.fc1.out_features == 2 * spec.attn_dim
