"""torch.compile(fullgraph=True) traces the models without graph breaks, and compiled models give the eager outputs
(and gradients).

Graph breaks and the traced forward / backward graphs are Dynamo's and AOTAutograd's work, checked here on the zoo
architectures with the ``aot_eager`` backend (the same graphs inductor receives, run without code generation).
Inductor's C++ code generation takes a minute or more per graph on a 2-core CPU: the suite compiles one model with
it, the int8 serving model of tests/speed/test_serving.py (frozen weights; its float attention included), and
leaves the zoo-size and training graphs to ``tools/benchmark.py --modes compile`` and its ``--agreement`` check.
"""

import pytest
import torch

import mvit


@pytest.mark.parametrize("name, input_size", [("mvitv2_t", (64, 64)), ("mvitv2_s_16x4", (4, 64, 64))])
def test_zoo_model_traces_in_one_graph_with_eager_outputs(name, input_size, perturb):
    """The zoo architectures (all blocks, heads and strides), built for a small input so the test stays quick."""
    torch._dynamo.reset()
    model = perturb(mvit.create_model(name, input_size=input_size)).eval()
    x = torch.randn(2, 3, *input_size)
    with torch.no_grad():
        expected, actual = model(x), torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    assert (expected - actual).abs().max().item() <= 1e-4


def _gradients(model: torch.nn.Module, forward, x: torch.Tensor) -> dict:
    model.zero_grad()
    forward(x).logsumexp(dim=1).mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("ndim, overrides", [(2, {}), (3, {"cls_embed_on": True, "attn_impl": "sdpa"})])
def test_training_graph_traces_in_one_graph_with_eager_gradients(ndim, overrides, make_model):
    """Training graphs: the explicit attention (small tiny-model blocks under "auto") and the folded SDPA path."""
    torch._dynamo.reset()
    model = make_model(ndim, **overrides).train()
    x = torch.randn(2, 3, *model.config.input_size)
    compiled = _gradients(model, torch.compile(model, backend="aot_eager", fullgraph=True), x)
    for n, grad in _gradients(model, model, x).items():
        assert (compiled[n] - grad).abs().max().item() <= 1e-4, n
