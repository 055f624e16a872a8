"""torch.compile(fullgraph=True) traces the models without graph breaks, and compiled models give the eager outputs
(and gradients). Slow: inductor compiles for minutes on a small CPU."""

import pytest
import torch

import mvit


@pytest.mark.slow
@pytest.mark.parametrize("name, input_size", [("mvitv2_t", (64, 64)), ("mvitv2_s_16x4", (4, 64, 64))])
def test_compiled_zoo_model_matches_eager(name, input_size, perturb):
    """The zoo architectures (all blocks, heads and strides), built for a small input so the test stays quick."""
    torch._dynamo.reset()
    model = perturb(mvit.create_model(name, input_size=input_size)).eval()
    x = torch.randn(2, 3, *input_size)
    with torch.no_grad():
        expected, actual = model(x), torch.compile(model, fullgraph=True)(x)
    assert (expected - actual).abs().max().item() <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("ndim, overrides", [(2, {}), (3, {"cls_embed_on": True, "attn_impl": "sdpa"})])
def test_compiled_training_matches_eager(ndim, overrides, make_model):
    """Training graphs: the explicit attention (small tiny-model blocks under "auto") and the folded SDPA path."""
    torch._dynamo.reset()
    model = make_model(ndim, **overrides).train()
    x = torch.randn(2, 3, *model.config.input_size)
    torch.compile(model, fullgraph=True)(x).logsumexp(dim=1).mean().backward()
    compiled = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model(x).logsumexp(dim=1).mean().backward()
    for n, p in model.named_parameters():
        assert (compiled[n] - p.grad).abs().max().item() <= 1e-4, n
