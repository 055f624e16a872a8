"""Gradients reach every parameter; a tiny model overfits one small batch."""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F


@pytest.mark.parametrize(
    "ndim, overrides",
    [
        (2, {}),
        (2, {"cls_embed_on": True, "use_abs_pos": True}),
        (3, {}),
        (3, {"use_abs_pos": True, "sep_pos_embed": True, "cls_embed_on": False}),
        (2, {"mode": "max"}),
        (2, {"pool_first": True, "mode": "avg", "cls_embed_on": True}),
        (2, {"dim_mul_in_att": False}),
        (2, {"window_sizes": [8, 8, 0, 0, 0], "out_norm": True}),
    ],
)
def test_gradient_reaches_every_parameter(ndim, overrides, make_tiny):
    model = make_tiny(ndim=ndim, **overrides).train()
    x = torch.randn(2, 3, *model.config.input_size)
    # Features of every token enter the loss: with a class token the head alone ignores the last patch queries.
    tokens = model.forward_features(x)
    loss = model.forward_head(tokens).logsumexp(dim=1).mean() + tokens.square().mean()
    if overrides.get("out_norm"):
        loss = loss + sum(f.mean() for f in model.forward_multiscale(x).values())
    loss.backward()
    without = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not without, f"no gradient for {without}"


def test_tiny_model_overfits_one_batch(make_tiny):
    torch.manual_seed(0)
    model = make_tiny(ndim=2, num_classes=4).train()
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


def test_grad_checkpointing_recomputes_every_block_with_the_same_gradients(make_tiny, perturb):
    model = perturb(make_tiny(ndim=3)).train()
    runs = Counter()
    for i, blk in enumerate(model.blocks):
        # A pre-hook: the recomputation stops early (torch's non-reentrant checkpoint), before a forward hook.
        blk.register_forward_pre_hook(lambda module, args, i=i: runs.update([i]))
    x = torch.randn(2, 3, *model.config.input_size)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        runs.clear()
        model.set_grad_checkpointing(enable)
        model.forward_features(x).sum().backward()
        # Checkpointing runs each block's forward again in the backward pass.
        assert runs == {i: 2 if enable else 1 for i in range(len(model.blocks))}, enable
        grads.append([p.grad.clone() for name, p in model.named_parameters() if not name.startswith("head.")])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    runs.clear()
    with torch.no_grad():
        model(x)
    assert runs == {i: 1 for i in range(len(model.blocks))}  # nothing to recompute without gradients
