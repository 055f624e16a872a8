"""timm's model contract, as timm's own ``tests/test_models.py`` checks it, on this project's models in timm's registry.

Written here (not timm's file): forward (and with gradient checkpointing), backward with a gradient on every
parameter, the pretrained config and classifier fields, ``features_only`` through timm's builder,
``forward_intermediates``, torch.fx symbolic tracing (same output; backward through the traced graph), torchvision's
``create_feature_extractor`` on an image and a video model, and timm's names as aliases of the same architectures.
T / S / B run at 64x64 (the position tables are interpolated); L and H are built on the meta device (metadata and
shapes only: 218 M / 667 M parameters take seconds to initialise).
TorchScript: not supported (see ``test_torchscript_is_not_supported``).
"""

from __future__ import annotations

import pytest
import torch

import mvit
from mvit.models import MViT
from mvit.models.zoo import list_aliases, model_info

timm = pytest.importorskip("timm")
feature_extraction = pytest.importorskip("torchvision.models.feature_extraction")
mvit_timm = pytest.importorskip("mvit.integrations.timm")

SIZE = 64
FULL = ["mvitv2_t", "mvitv2_s", "mvitv2_b"]


def _timm(name: str, **kwargs) -> torch.nn.Module:
    return timm.create_model(mvit_timm.PREFIX + name, img_size=SIZE, **kwargs)


@pytest.fixture(scope="module", params=FULL)
def built(request):
    torch.manual_seed(0)
    return request.param, _timm(request.param).eval(), torch.randn(2, 3, SIZE, SIZE)


def test_forward_and_gradient_checkpointing(built):
    name, model, x = built
    with torch.no_grad():
        out = model(x)
        model.set_grad_checkpointing(True)
        again = model(x)
        model.set_grad_checkpointing(False)
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    torch.testing.assert_close(again, out, rtol=0, atol=0)


def test_default_cfg_and_heads(built):
    name, model, x = built
    cfg = model.pretrained_cfg
    assert cfg is model.default_cfg and cfg["input_size"] == (3, 224, 224) and cfg["num_classes"] == 1000
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state and cfg["classifier"] + ".weight" in state
    assert model.num_features == model.head_hidden_size > 0
    with torch.no_grad():
        tokens = model.forward_features(x)
        pre = model.forward_head(tokens, pre_logits=True)
    assert tokens.shape[-1] == model.num_features and pre.shape == (2, model.head_hidden_size)
    if name == "mvitv2_t":  # timm's num_classes=0 (one more model: the smallest only)
        headless = _timm(name, num_classes=0).eval()
        with torch.no_grad():
            assert headless(x).shape == (2, headless.num_features) and headless.num_classes == 0


def test_features_only_through_timms_builder(built):
    name, model, x = built
    features = _timm(name, features_only=True).eval()
    infos = model.feature_info
    assert all("module" in info for info in infos)
    assert features.feature_info.channels() == [info["num_chs"] for info in infos]
    with torch.no_grad():
        maps = features(x)
        _, intermediates = model.forward_intermediates(x)
    for map_, inter, info in zip(maps, intermediates, infos):
        assert map_.shape == (2, info["num_chs"], SIZE // info["reduction"], SIZE // info["reduction"])
        torch.testing.assert_close(map_, inter, rtol=0, atol=0)


def test_forward_intermediates_and_final_tokens(built):
    name, model, x = built
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    assert info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x, output_fmt="NCHW")
        tokens = model.forward_features(x)
    assert [t.shape[1] for t in intermediates] == info.channels()
    torch.testing.assert_close(final, tokens, rtol=0, atol=0)


def test_backward_reaches_every_parameter():
    model = _timm("mvitv2_t", num_classes=42).train()
    out = model(torch.randn(2, 3, SIZE, SIZE))
    out.mean().backward()
    assert out.shape == (2, 42)
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_fx_trace_same_output_and_backward():
    """timm's FX tests, through torchvision's extractor without timm's leaf lists: the model's own torch.fx.wrap
    calls are enough. The traced graph gives the same bits in eval and a gradient on every parameter in train."""
    model = _timm("mvitv2_t", num_classes=42).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    train_nodes, eval_nodes = feature_extraction.get_graph_node_names(model)
    traced = feature_extraction.create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]]
    )
    with torch.inference_mode():
        torch.testing.assert_close(next(iter(traced(x).values())), model(x), rtol=0, atol=0)
    traced.train()
    out = next(iter(traced(x).values()))
    out.mean().backward()
    assert out.shape == (2, 42)
    assert [n for n, p in traced.named_parameters() if p.grad is None] == []
    # The input check runs in the traced graph too.
    with pytest.raises(ValueError, match=r"expects input of shape \(B, C, H, W\), got \(2, 3, 64\)"):
        traced.eval()(x[..., 0])


def test_large_and_huge_on_meta_device():
    """L and H built on the meta device: metadata and output shapes, no arithmetic (218 M and 667 M parameters take
    seconds to initialise; their blocks are those of T / S / B, which run above)."""
    with torch.device("meta"):
        large = _timm("mvitv2_l")
        out = large(torch.empty(1, 3, SIZE, SIZE))
    assert out.shape == (1, 1000)
    # L widens in the MLP (dim_mul_in_att=False): a stage ends at the next stage's width, as timm's feature_info.
    assert [i["num_chs"] for i in large.feature_info] == [288, 576, 1152, 1152]
    with torch.device("meta"):
        huge = _timm("mvitv2_h")
        _, intermediates = huge.forward_intermediates(torch.empty(1, 3, SIZE, SIZE))
        headless = _timm("mvitv2_h", num_classes=0)(torch.empty(1, 3, SIZE, SIZE))
    assert huge.head_hidden_size == huge.num_features == 1536 and headless.shape == (1, 1536)
    assert [t.shape[1] for t in intermediates] == [i["num_chs"] for i in huge.feature_info] == [192, 384, 768, 1536]


def test_torchvision_feature_extractor_on_an_image_and_a_video_model():
    """create_feature_extractor on the last block of each stage = forward_intermediates' tokens (NLC)."""
    for name, size in (("mvitv2_t", (SIZE, SIZE)), ("mvitv2_s_16x4", (4, SIZE, SIZE))):
        model = mvit.create_model(name, input_size=size).eval()
        x = torch.randn(1, 3, *size)
        nodes = {f"blocks.{end}": f"stage{k}" for k, end in enumerate(model.stage_ends)}
        extractor = feature_extraction.create_feature_extractor(model, nodes)
        with torch.no_grad():
            features = extractor(x)
            expected = model.forward_intermediates(x, output_fmt="NLC", intermediates_only=True)
        assert list(features) == list(nodes.values())
        for got, want in zip(features.values(), expected):
            torch.testing.assert_close(got, want, rtol=0, atol=0)  # a block's node: the tokens it returns


def test_eager_input_check_is_one_line():
    model = mvit.create_model("mvitv2_t", input_size=(32, 32))
    with pytest.raises(ValueError, match=r"^MViT expects 3 input channels \(B, C, H, W\), got 1 in \(1, 1, 32, 32\)$"):
        model(torch.randn(1, 1, 32, 32))


@pytest.mark.xfail(strict=True, raises=(RuntimeError, torch.jit.frontend.NotSupportedError), reason="see docs/timm.md")
def test_torchscript_is_not_supported():
    """torch.jit.script of the whole model fails: grids are variadic tuples (TorchScript has none), pooling passes
    submodules to functions, the attention kernel is chosen by Python-level checks. TorchScript is deprecated
    (torch >= 2.5 warns); torch.export (mvit.export.export_program) and torch.fx are the supported paths.
    Strict: the day it scripts, this fails and the docs should say so."""
    torch.jit.script(mvit.create_model("mvitv2_t", input_size=(32, 32)).eval())


# --------------------------------------------------------------------------- timm's names
TIMM_ALIASES = {
    "mvitv2_tiny": "mvitv2_t",
    "mvitv2_small": "mvitv2_s",
    "mvitv2_base": "mvitv2_b",
    "mvitv2_large": "mvitv2_l",
    "mvitv2_small_cls": "mvitv2_s",
    "mvitv2_base_cls": "mvitv2_b",
    "mvitv2_large_cls": "mvitv2_l",
    "mvitv2_huge_cls": "mvitv2_h",
}


def test_aliases_are_timms_mvitv2_names():
    assert list_aliases() == TIMM_ALIASES
    assert sorted(timm.list_models("mvitv2_*")) == sorted(TIMM_ALIASES)
    assert not set(TIMM_ALIASES) & set(mvit.list_models())  # the zoo lists each architecture once


@pytest.mark.parametrize("alias", sorted(TIMM_ALIASES))
def test_alias_has_timms_parameter_count(alias):
    """Same count as timm.create_model(alias) with 1000 classes and with timm's default head (19,168 classes for
    the ImageNet-21k *_cls releases), and the count the alias states."""
    with torch.device("meta"):
        reference = timm.create_model(alias, num_classes=1000)
        default = timm.create_model(alias)
        ours = mvit.create_model(alias)
        ours_default = mvit.create_model(alias, num_classes=default.num_classes)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(reference) == model_info(alias).num_params
    assert count(ours_default) == count(default)
    assert ours.cls_embed_on is alias.endswith("_cls")
    # timm's class-token models add the pooled q to the class token too (the image repo's legacy pooling).
    assert ours.config.residual_pooling_cls is alias.endswith("_cls")


def test_class_token_alias_gives_timms_logits(tmp_path, perturb):
    """Architecture, not only counts: timm's mvitv2_small_cls weights in our alias give timm's logits."""
    reference = perturb(timm.create_model("mvitv2_small_cls", img_size=SIZE)).eval()
    path = tmp_path / "small_cls.pth"
    torch.save(reference.state_dict(), path)
    model = mvit.create_model("mvitv2_small_cls", checkpoint=str(path), input_size=(SIZE, SIZE)).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-5


def test_timm_pretrained_goes_through_our_weights(monkeypatch):
    """``pretrained=True`` in timm builds the release's architecture and loads its tag with this project's loader;
    a name without a release is one ConfigError listing none."""
    loaded = []
    monkeypatch.setattr("mvit.api.load_pretrained", lambda model, w, **kw: loaded.append(w.tag))
    with torch.device("meta"):
        model = timm.create_model("mvit_mvitv2_base_cls.fb_in21k", pretrained=True)
        tuned = timm.create_model("mvit_mvitv2_tiny", pretrained=True, num_classes=10)
    assert loaded == ["mvitv2_b.fb_in21k", "mvitv2_t.fb_in1k"]
    assert isinstance(model, MViT) and model.num_classes == 19168 and model.cls_embed_on
    assert model.pretrained_cfg["url"].endswith("MViTv2_B_in21k.pyth") and tuned.num_classes == 10
    with pytest.raises(mvit.errors.ConfigError, match="no released weights"):
        timm.create_model("mvit_mvitv2_small_cls", pretrained=True)
