"""The model runs under bf16 / fp16 autocast in inference and training (rel-pos tables stay float32)."""

import pytest
import torch

from mvit.models.pooling import pool_tokens


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "ndim, overrides", [(2, {}), (3, {"cls_embed_on": True}), (2, {"window_sizes": [8, 8, 0, 0, 0]})]
)
@pytest.mark.parametrize("impl", ["auto", "sdpa", "explicit"])
def test_autocast_inference_and_training(dtype, ndim, overrides, impl, make_model):
    model = make_model(ndim, attn_impl=impl, **overrides)
    x = torch.randn(2, 3, *model.config.input_size)
    model.eval()
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=dtype):
            low = model(x)
    assert low.dtype == dtype
    # Half precision keeps about 3 significant digits: far from fp32 exactness, but the same function.
    assert (low.float() - reference).abs().max().item() <= 0.05 * reference.abs().max().item()

    model.train()
    with torch.autocast("cpu", dtype=dtype):
        loss = model(x).float().logsumexp(dim=1).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32, name
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("cls_embed_on", [False, True])
def test_bf16_training_gives_the_fp32_gradients_of_3d_pooling_convolutions(cls_embed_on, make_model):
    """The tiny video model pools grids of 2 frames, where oneDNN's bf16 channels-last depthwise convolutions
    return wrong weight gradients (see ``_bf16_weight_grad_needs_channels_first``): ours must match fp32 to bf16
    precision."""
    model = make_model(3, drop_path_rate=0.0, cls_embed_on=cls_embed_on).train()
    x = torch.randn(2, 3, *model.config.input_size)
    model(x).logsumexp(dim=1).mean().backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x).float().logsumexp(dim=1).mean().backward()
    pools = [(name, p.grad) for name, p in model.named_parameters() if ".pool_" in name]
    assert len(pools) >= 9
    # bf16 rounding through the whole network leaves up to ~0.1 here; the faulty kernel gives 0.7-1.1.
    for name, grad in pools:
        # (the last block's q pooling gets no gradient when the head reads the class token: 0 / 0 -> 0)
        error = ((grad - reference[name]).norm() / reference[name].norm().clamp_min(1e-12)).item()
        assert error <= 0.25, f"{name}: relative error {error:.3f}"


@pytest.mark.parametrize("heads, height", [(1, 2), (4, 3)])
def test_bf16_pooling_weight_gradient_on_a_one_token_wide_grid(heads, height):
    """2-D: a grid one token wide pooled with stride 2, another case of the faulty oneDNN kernel. It reads
    uninitialised memory (wrong in about half of the calls), hence the repetitions."""
    pool = torch.nn.Conv2d(16, 16, 3, 2, 1, groups=16, bias=False)
    for _ in range(20):
        x = torch.randn(2, heads, height, 16)  # (B, heads, N, C) on the grid (height, 1)
        pool.weight.grad = None
        pool_tokens(x, pool, (height, 1), has_cls=False)[0].square().sum().backward()
        reference, pool.weight.grad = pool.weight.grad.clone(), None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pooled, grid = pool_tokens(x, pool, (height, 1), has_cls=False)
        pooled.float().square().sum().backward()
        assert grid == ((height + 1) // 2, 1)
        assert ((pool.weight.grad - reference).norm() / reference.norm()).item() <= 0.02
