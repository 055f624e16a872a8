"""The model runs under bf16 / fp16 autocast in inference and training (rel-pos tables stay float32)."""

import pytest
import torch


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "ndim, overrides", [(2, {}), (3, {"cls_embed_on": True}), (2, {"window_sizes": [8, 8, 0, 0, 0]})]
)
@pytest.mark.parametrize("impl", ["auto", "sdpa", "explicit"])
def test_autocast_inference_and_training(dtype, ndim, overrides, impl, make_model):
    model = make_model(ndim, attn_impl=impl, **overrides)
    x = torch.randn(2, 3, *model.cfg.input_size)
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
