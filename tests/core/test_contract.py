"""The model contract (timm's interface, multi-scale features, export, resizing) over every model of the zoo.

Every ``list_models()`` entry is built with its own architecture at a small input size (32x32 images, 4x32x32
clips: depth and widths unchanged), so the whole zoo runs on a CPU. Resizing to another input size is checked
against interpolation written out here with ``F.interpolate``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mvit
from mvit.checkpoint import load_checkpoint
from mvit.export import export_program
from mvit.models import MViT

SMALL_SIZE = {2: (32, 32), 3: (4, 32, 32)}
# mvitv2_h is checked without a backward pass: its gradients would add 2.7 GB to its 2.7 GB of parameters, and
# forward + backward through its 80 blocks took 90 s on a busy 2-core CPU. Its blocks are mvitv2_l's, wider.
FORWARD_ONLY = {"mvitv2_h"}


def _small_model(name: str) -> MViT:
    ndim = mvit.models.model_info(name).build_config().ndim
    # No drop path: it may drop a whole branch for the whole batch, which would leave parameters without gradients.
    return mvit.create_model(name, input_size=SMALL_SIZE[ndim], drop_path_rate=0.0)


def _single_key_blocks(model: MViT) -> list:
    """Blocks that attend over a single key at the model's size: a one-token key grid and no class token."""
    if model.cls_embed_on:
        return []
    single = []
    for i, spec in enumerate(model.block_specs):
        stride = spec.stride_kv or (1,) * model.ndim
        # Pooling with kernel 3, padding 1: ceil(size / stride) keys per axis.
        if all((size - 1) // s + 1 == 1 for size, s in zip(spec.input_size, stride)):
            single.append(i)
    return single


@pytest.fixture(scope="module", params=mvit.list_models())
def zoo(request):
    """(name, model, input): one zoo model at a small input size, built once for all the tests of this module."""
    torch.manual_seed(0)
    model = _small_model(request.param)
    x = torch.randn(2, 3, *model.config.input_size)
    yield request.param, model, x


def test_forward_features_head_and_backward(zoo):
    name, model, x = zoo
    if name in FORWARD_ONLY:
        pytest.skip(f"{name}: forward only (see FORWARD_ONLY); covered by test_eval_forwards_agree")
    model.train()
    model.zero_grad()
    tokens = model.forward_features(x)
    logits = model.forward_head(tokens)
    assert logits.shape == (2, model.num_classes)
    # Every token enters the loss: with a class token the head alone does not reach the last block's patch queries.
    (logits.logsumexp(dim=1).mean() + tokens.square().mean()).backward()
    without = {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    # Where attention has a single key (the last stage at 32x32 without a class token) the softmax is constant:
    # the key path (k pooling, rel-pos tables) cannot change the output.
    key_path = ("rel_pos_h", "rel_pos_w", "pool_k.weight", "norm_k.weight", "norm_k.bias")
    single_key = {f"blocks.{i}.attn.{k}" for i in _single_key_blocks(model) for k in key_path}
    assert single_key <= without
    without -= single_key
    assert not without, f"no gradient for {sorted(without)}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.zero_grad(set_to_none=True)


def test_eval_forwards_agree(zoo):
    """forward = forward_head(forward_features); forward_intermediates and forward_multiscale give the same stage
    maps (B, C, [T,] H, W) with the channels and reductions of ``feature_info``."""
    name, model, x = zoo
    model.eval()
    with torch.no_grad():
        logits = model(x)
        tokens = model.forward_features(x)
        final, intermediates = model.forward_intermediates(x)
        maps = model.forward_multiscale(x)
    assert logits.shape == (2, model.num_classes) and torch.isfinite(logits).all()
    assert torch.equal(model.forward_head(tokens), logits)
    assert model.forward_head(tokens, pre_logits=True).shape == (2, model.num_features)
    assert torch.equal(final, tokens)
    names = [info["name"] for info in model.feature_info]
    assert names == ["scale2", "scale3", "scale4", "scale5"] and list(maps) == names
    size = model.config.input_size
    for info, inter in zip(model.feature_info, intermediates):
        grid = tuple(s // info["reduction"] for s in size[-2:])
        time = (size[0] // model.config.patch_stride[0],) if model.ndim == 3 else ()
        assert inter.shape == (2, info["num_chs"], *time, *grid), info["name"]
        assert torch.equal(maps[info["name"]], inter), info["name"]


def test_classifier_weight_decay_and_groups(zoo):
    """get_classifier / reset_classifier / no_weight_decay / group_matcher (timm's grouping function)."""
    timm_models = pytest.importorskip("timm.models")
    name, model, x = zoo
    names = [n for n, _ in model.named_parameters()]
    classifier = model.get_classifier()
    assert isinstance(classifier, torch.nn.Linear) and classifier.out_features == model.num_classes

    no_decay = model.no_weight_decay()
    tables = {n for n in names if n.rsplit(".", 1)[-1] in ("rel_pos_h", "rel_pos_w", "rel_pos_t")}
    assert tables and tables <= no_decay <= set(names)
    assert ("cls_token" in no_decay) is model.cls_embed_on
    assert not any(n.endswith((".weight", ".bias")) for n in no_decay)

    depth = len(model.blocks)
    layer = timm_models.group_parameters(model, model.group_matcher(), reverse=True)
    assert set(layer) == set(names)
    assert layer["patch_embed.proj.weight"] == 0
    assert [layer[f"blocks.{i}.attn.qkv.weight"] for i in range(depth)] == list(range(1, depth + 1))
    assert layer["norm.weight"] == layer["head.projection.weight"] == depth + 1
    stages = timm_models.group_parameters(model, model.group_matcher(coarse=True), reverse=True)
    assert max(stages.values()) == len(model.stage_ends) + 1
    assert stages[f"blocks.{model.stage_ends[0]}.attn.qkv.weight"] == 1
    assert stages[f"blocks.{model.stage_ends[0] + 1}.attn.qkv.weight"] == 2

    head, num_classes = model.head, model.num_classes
    tokens = torch.randn(2, 5, model.num_features)
    try:
        model.reset_classifier(7)
        assert model.get_classifier().out_features == 7 and model.forward_head(tokens).shape == (2, 7)
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), torch.nn.Identity)
        assert model.forward_head(tokens).shape == (2, model.num_features)
    finally:
        model.head, model.num_classes = head, num_classes


def test_torch_export_of_the_tiny_model(perturb):
    model = perturb(_small_model("mvitv2_t")).eval()
    program = export_program(model)
    x = torch.randn(3, 3, 32, 32)  # another batch size than the example's (dynamic batch)
    with torch.no_grad():
        assert (program.module()(x) - model(x)).abs().max().item() <= 1e-5


# --------------------------------------------------------------------------- forward_intermediates options
@pytest.mark.parametrize("ndim", [2, 3])
def test_forward_intermediates_options(ndim, make_tiny, perturb):
    model = perturb(make_tiny(ndim=ndim, cls_embed_on=True)).eval()
    x = torch.randn(2, 3, *model.config.input_size)
    fmt = "NCHW" if ndim == 2 else "NCTHW"
    with torch.no_grad():
        tokens = model.forward_features(x)
        final, maps = model.forward_intermediates(x, output_fmt=fmt)
        _, nlc = model.forward_intermediates(x, output_fmt="NLC")
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        picked = model.forward_intermediates(x, indices=[0, -1], norm=True, intermediates_only=True)
        early, first = model.forward_intermediates(x, indices=[1], stop_early=True)
    assert torch.equal(final, tokens) and len(maps) == len(nlc) == 4
    for tokens_k, map_k in zip(nlc, maps):
        # NLC keeps the class token; the maps are the patch tokens laid out on the grid.
        assert tokens_k.shape[1] == 1 + map_k[0, 0].numel()
        torch.testing.assert_close(tokens_k[:, 1:], map_k.flatten(2).transpose(1, 2), rtol=0, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(last_two, maps[2:]))
    assert torch.equal(picked[0], maps[0])
    # norm: the final norm on the last stage, as forward_features applies it.
    torch.testing.assert_close(picked[1], tokens[:, 1:].transpose(1, 2).reshape(maps[3].shape), rtol=0, atol=0)
    # stop_early: the blocks of the last two stages do not run; the tokens there come back un-normed.
    assert torch.equal(first[0], maps[1]) and early.shape[-1] == maps[1].shape[1]
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NCTHW" if ndim == 2 else "NCHW")
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[4])


# --------------------------------------------------------------------------- resizing to another input size
def _interp_grid(pos: torch.Tensor, old: tuple, new: tuple, prefix: int = 0) -> torch.Tensor:
    """(1, prefix + prod(old), C) -> (1, prefix + prod(new), C): the grid part resized by linear (time), bicubic
    (images) or trilinear (video) interpolation without corner alignment; prefix tokens (class token) kept."""
    C, n = pos.shape[-1], len(old)
    grid = pos[:, prefix:].reshape(1, *old, C).permute(0, n + 1, *range(1, n + 1))
    mode = {1: "linear", 2: "bicubic", 3: "trilinear"}[n]
    grid = F.interpolate(grid, size=new, mode=mode, align_corners=False)
    return torch.cat((pos[:, :prefix], grid.permute(0, *range(2, n + 2), 1).reshape(1, -1, C)), dim=1)


def _interp_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """(L, C) -> (length, C), linear interpolation along L."""
    return F.interpolate(table.t()[None], size=length, mode="linear", align_corners=False)[0].t()


def _resized_state(small: MViT, big: MViT) -> dict:
    """The state of ``small`` with every position embedding and rel-pos table interpolated to ``big``'s shapes."""
    old, new = small.patch_grid, big.patch_grid
    target = big.state_dict()
    state = {}
    for key, value in small.state_dict().items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf in ("rel_pos_h", "rel_pos_w", "rel_pos_t"):
            value = _interp_table(value, target[key].shape[0])
        elif leaf == "pos_embed":
            value = _interp_grid(value, old, new, prefix=int(small.cls_embed_on))
        elif leaf == "pos_embed_spatial":
            value = _interp_grid(value, old[1:], new[1:])
        elif leaf == "pos_embed_temporal":
            value = _interp_grid(value, old[:1], new[:1])
        assert value.shape == target[key].shape, key
        state[key] = value
    return state


@pytest.mark.parametrize(
    "ndim, overrides, big_size",
    [
        (2, {"cls_embed_on": True, "use_abs_pos": True}, (64, 96)),
        (2, {"dim_mul_in_att": False, "num_heads": 2}, (64, 96)),
        (3, {"use_abs_pos": True}, (8, 64, 96)),
        (3, {"use_abs_pos": True, "sep_pos_embed": True, "cls_embed_on": True}, (8, 64, 96)),
    ],
)
def test_other_input_size_interpolates_embeddings_and_tables(ndim, overrides, big_size, make_tiny, perturb):
    """A model run at another size = the model built for that size with its position embeddings and rel-pos
    tables interpolated (every token grid even, so the build rule of the tables is that of the forward)."""
    small = perturb(make_tiny(ndim=ndim, **overrides)).eval()
    big = make_tiny(ndim=ndim, input_size=big_size, **overrides).eval()
    resized = {k for k, v in small.state_dict().items() if v.shape != big.state_dict()[k].shape}
    assert any("rel_pos" in k for k in resized)
    assert any("pos_embed" in k for k in resized) is ("use_abs_pos" in overrides)
    big.load_state_dict(_resized_state(small, big))
    x = torch.randn(2, 3, *big_size)
    with torch.no_grad():
        torch.testing.assert_close(small(x), big(x), rtol=0, atol=1e-6)


def test_checkpoint_pos_embed_and_tables_resized_on_load(tmp_path, make_tiny, perturb):
    """strict=False loading (fine-tuning at another size) resizes pos_embed and the tables as the forward does."""
    small = perturb(make_tiny(ndim=2, cls_embed_on=True, use_abs_pos=True))
    path = tmp_path / "small.pth"
    torch.save(small.state_dict(), path)
    big = make_tiny(ndim=2, cls_embed_on=True, use_abs_pos=True, input_size=(64, 96)).eval()
    report = load_checkpoint(big, str(path), strict=False)
    assert report.ok
    resized = {entry.split(" ")[0] for entry in report.resized}
    assert "pos_embed" in resized and "blocks.0.attn.rel_pos_h" in resized and "blocks.0.attn.rel_pos_w" in resized
    expected = _resized_state(small, big)
    for key, value in big.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small.eval()(x), rtol=0, atol=1e-6)
