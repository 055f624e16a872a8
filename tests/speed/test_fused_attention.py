"""The fused attention paths (SDPA with the bias as a mask, SDPA with the bias folded into the matmul) give the
outputs and gradients of the explicit reference."""

import pytest
import torch

from mvit.models import BlockSpec, MViT
from mvit.models.attention import MultiScaleAttention
from mvit.models.rel_pos import decomposed_rel_pos_bias

CASES = [
    (2, {}),
    (2, {"cls_embed_on": True}),
    (2, {"cls_embed_on": True, "residual_pooling_cls": True}),
    (3, {}),
    (3, {"cls_embed_on": True}),
    (2, {"window_sizes": [8, 8, 0, 0, 0]}),
    (2, {"dim_mul_in_att": False, "num_heads": 2}),
    (2, {"pool_first": True, "mode": "avg", "cls_embed_on": True}),
    (2, {"mode": "max", "residual_pooling": False}),
]


def _with_impl(model: MViT, impl: str) -> MViT:
    twin = MViT(model.config.replace(attn_impl=impl))
    twin.load_state_dict(model.state_dict())
    return twin


@pytest.fixture
def calls(monkeypatch):
    """Counts of the attention kernels run: {"explicit": n, "mask": n, "fold": n} (SDPA with the bias as a mask, or
    folded into its matmul)."""
    counts = {"explicit": 0, "mask": 0, "fold": 0}
    for key, name in (("explicit", "_attend_explicit"), ("mask", "_bias_mask"), ("fold", "_sdpa_folded")):
        original = getattr(MultiScaleAttention, name)

        def counted(self, *args, _original=original, _key=key):
            counts[_key] += 1
            return _original(self, *args)

        monkeypatch.setattr(MultiScaleAttention, name, counted)
    return counts


def _reset(counts: dict) -> dict:
    """The counts so far, and zero them."""
    before = dict(counts)
    counts.update(dict.fromkeys(counts, 0))
    return before


def _loss(model: MViT, x: torch.Tensor) -> torch.Tensor:
    # Every token enters the loss (the head alone ignores patch queries of the last block in class-token models).
    tokens = model.forward_features(x)
    return model.forward_head(tokens).logsumexp(dim=1).mean() + tokens.square().mean()


@pytest.mark.parametrize("ndim, overrides", CASES)
def test_fused_inference_matches_explicit(ndim, overrides, make_model, calls):
    """Without gradients "sdpa" and "auto" both take SDPA with the bias as a mask, once per block."""
    explicit = make_model(ndim, attn_impl="explicit", **overrides).eval()
    x = torch.randn(2, 3, *explicit.config.input_size)
    # Window attention attends once per batch of windows: still one call per block.
    with torch.no_grad():
        expected = explicit(x)
        assert _reset(calls) == {"explicit": len(explicit.blocks), "mask": 0, "fold": 0}
        for impl in ("sdpa", "auto"):
            actual = _with_impl(explicit, impl).eval()(x)
            assert (actual - expected).abs().max().item() <= 1e-5, impl
            assert _reset(calls) == {"explicit": 0, "mask": len(explicit.blocks), "fold": 0}, impl


@pytest.mark.parametrize("ndim, overrides", CASES)
def test_fused_training_matches_explicit(ndim, overrides, make_model, calls):
    """With gradients "sdpa" folds the bias into the matmul (no mask); "auto" keeps the explicit path for the
    tiny model's small attention matrices on the CPU. Same loss and parameter gradients."""
    explicit = make_model(ndim, attn_impl="explicit", **overrides).train()
    x = torch.randn(2, 3, *explicit.config.input_size)
    _loss(explicit, x).backward()
    blocks = len(explicit.blocks)
    _reset(calls)
    expected_calls = {
        "sdpa": {"explicit": 0, "mask": 0, "fold": blocks},
        "auto": {"explicit": blocks, "mask": 0, "fold": 0},
    }
    for impl in ("sdpa", "auto"):
        fused = _with_impl(explicit, impl).train()
        _loss(fused, x).backward()
        assert _reset(calls) == expected_calls[impl], impl
        for (name, p), q in zip(explicit.named_parameters(), fused.parameters()):
            assert (p.grad - q.grad).abs().max().item() <= 1e-5, f"{impl}: gradient of {name}"


def test_fused_matches_explicit_at_another_input_size(make_model):
    """Interpolated rel-pos tables (input larger than the build size) go through the same fused paths."""
    explicit = make_model(2, attn_impl="explicit", cls_embed_on=True).eval()
    fused = _with_impl(explicit, "sdpa").eval()
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert (fused(x) - explicit(x)).abs().max().item() <= 1e-5


def _attention(has_cls: bool, impl: str, grid: int = 64, kv_stride: int = 8) -> MultiScaleAttention:
    spec = BlockSpec(
        dim=16,
        dim_out=16,
        num_heads=2,
        input_size=(grid, grid),
        kernel_q=(3, 3),
        stride_q=(1, 1),
        kernel_kv=(3, 3),
        stride_kv=(kv_stride, kv_stride),
        has_cls=has_cls,
        attn_impl=impl,
    )
    return MultiScaleAttention(spec)


@pytest.mark.parametrize("has_cls", [False, True])
def test_large_attention_folds_with_the_same_gradients(has_cls, calls, perturb):
    """4096 x 64 logits per head: "auto" takes the folded SDPA path in training; all paths agree."""
    torch.manual_seed(0)
    reference = perturb(_attention(has_cls, "explicit"), scale=0.05)
    x = torch.randn(2, 64 * 64 + int(has_cls), 16)
    results = {}
    for impl in ("explicit", "auto", "sdpa"):
        attn = _attention(has_cls, impl)
        attn.load_state_dict(reference.state_dict())
        inp = x.clone().requires_grad_(True)
        out, thw = attn(inp, (64, 64))
        out.square().mean().backward()
        results[impl] = (out.detach(), inp.grad, attn.rel_pos_h.grad, attn.qkv.weight.grad)
        assert calls["fold"] == {"explicit": 0, "auto": 1, "sdpa": 2}[impl]
    assert thw == (64, 64)
    for impl in ("auto", "sdpa"):
        for expected, actual in zip(results["explicit"], results[impl]):
            assert (expected - actual).abs().max().item() <= 1e-5, impl


def test_bias_mask_is_zero_for_the_class_token():
    torch.manual_seed(0)
    attn = _attention(True, "sdpa", grid=8, kv_stride=2)
    q = torch.randn(2, 2, 1 + 64, 8)
    mask = attn._bias_mask(q, (8, 8), (4, 4))
    assert mask.shape == (2, 2, 65, 17)
    assert mask[:, :, 0].abs().max() == 0 and mask[:, :, :, 0].abs().max() == 0
    expected = decomposed_rel_pos_bias(q[:, :, 1:], (8, 8), (4, 4), attn.rel_pos_h, attn.rel_pos_w)
    torch.testing.assert_close(mask[:, :, 1:, 1:], expected, rtol=0, atol=0)
