"""The weights registry: every released file's architecture, and loading from torch.hub's cache.

The files themselves cannot be downloaded here. Each tag's file is stood in for by a state dict of the right
architecture written in its publisher's layout under the publisher's own file name in the cache: random weights
up to B size; for L and H one constant per tensor (a stride-0 view, so the file stays small while the model is
built and loaded at full size). The architecture each L / H tag builds is also checked against the reference
implementation of the same weights (timm's ``*_cls`` models for the ImageNet-21k files) or the publisher's
parameter count.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from mvit import create_model
from mvit.checkpoint.hub import MIRROR_ENV, cache_path
from mvit.checkpoint.pretrained import load_pretrained
from mvit.errors import CheckpointError, ConfigError
from mvit.models import MViT, model_info
from mvit.models import weights as registry
from mvit.models.weights import class_names, get_weights, list_weights
from tests.core.layouts import as_mmpretrain

SMALL_ARCHS = {"mvitv2_t", "mvitv2_s", "mvitv2_b", "mvitv2_s_16x4", "mvitv2_b_32x3"}
CLASSIFIER_TAGS = list_weights(include_detectors=False)


def _config(tag: str):
    weights = get_weights(tag)
    return model_info(weights.arch).build_config().replace(**weights.overrides)


def _publisher_layout(weights, state: dict) -> dict:
    if weights.format == "mmpretrain":
        return as_mmpretrain(state)
    assert weights.format == "official", weights.format
    return {"model_state": state, "epoch": 300}


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # nothing listens: any download attempt fails


def _publish_stand_in(monkeypatch, tag: str) -> None:
    """Where the publisher states a sha256, state the stand-in's own (a cached file is checked against it)."""
    weights = get_weights(tag)
    if weights.sha256:
        digest = hashlib.sha256(open(cache_path(weights.url), "rb").read()).hexdigest()
        monkeypatch.setitem(registry._REGISTRY, tag, dataclasses.replace(weights, sha256=digest[:8]))


@pytest.mark.parametrize(
    "tag", [t for t in CLASSIFIER_TAGS if get_weights(t).arch in SMALL_ARCHS and get_weights(t).format != "torchvision"]
)
def test_tag_loads_its_file_from_the_cache(tag, offline_cache, monkeypatch):
    weights = get_weights(tag)
    source = MViT(_config(tag))  # random init (rel-pos tables too): every tensor differs from another model's
    path = cache_path(weights.url)
    torch.save(_publisher_layout(weights, source.state_dict()), _mkdirs(path))
    _publish_stand_in(monkeypatch, tag)
    assert path.endswith(weights.file_name)
    target = create_model(tag, pretrained=True, progress=False)
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name
    assert target.num_classes == weights.num_classes


@pytest.mark.parametrize(
    "tag",
    [t for t in CLASSIFIER_TAGS if get_weights(t).arch not in SMALL_ARCHS and get_weights(t).format != "torchvision"],
)
def test_large_tag_loads_its_file_from_the_cache(tag, offline_cache, monkeypatch):
    weights = get_weights(tag)
    with torch.device("meta"):
        shapes = {name: t.shape for name, t in MViT(_config(tag)).state_dict().items()}
    # Tensor i is the constant i: a key loaded into another parameter of the same shape would show.
    state = {name: torch.tensor(float(i)).expand(shape) for i, (name, shape) in enumerate(shapes.items())}
    torch.save(_publisher_layout(weights, state), _mkdirs(cache_path(weights.url)))
    _publish_stand_in(monkeypatch, tag)
    loaded = create_model(tag, pretrained=True, progress=False).state_dict()
    assert list(loaded) == list(shapes)
    for i, (name, tensor) in enumerate(loaded.items()):
        assert tensor.shape == shapes[name] and bool((tensor == i).all()), name


def test_torchvision_file_loads_into_s_16x4(offline_cache, monkeypatch):
    from torchvision.models.video import MViT_V2_S_Weights, mvit_v2_s

    weights = get_weights("mvitv2_s_16x4.tv_k400")
    tv = MViT_V2_S_Weights.KINETICS400_V1
    assert weights.url == tv.url and tv.url.rsplit("-", 1)[1].startswith(weights.sha256)
    assert weights.metrics == {"top1": tv.meta["_metrics"]["Kinetics-400"]["acc@1"], "top5": 94.665}
    torch.save(mvit_v2_s().state_dict(), _mkdirs(cache_path(weights.url)))
    with pytest.raises(CheckpointError, match="does not match the published ae3be167"):  # not torchvision's file
        load_pretrained(MViT(_config(weights.tag)), weights, progress=False)
    _publish_stand_in(monkeypatch, weights.tag)
    assert load_pretrained(MViT(_config(weights.tag)), get_weights(weights.tag), progress=False).ok


@pytest.mark.parametrize(
    "tag, timm_name",
    [
        ("mvitv2_b.fb_in21k", "mvitv2_base_cls"),
        ("mvitv2_l.fb_in21k", "mvitv2_large_cls"),
        ("mvitv2_h.fb_in21k", "mvitv2_huge_cls"),
    ],
)
def test_in21k_tags_build_timms_architecture_of_the_same_file(tag, timm_name):
    import timm

    with torch.device("meta"):
        ours = MViT(_config(tag))
        ref = timm.create_model(timm_name, num_classes=get_weights(tag).num_classes)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    assert _config(tag).residual_pooling_cls  # timm (and the image repo) add pooled q to the class token too


# Millions of parameters as the publishers' READMEs print them (mvit: "218M"; mmpretrain: 217.99; PySlowFast SSv2:
# 213.1). The K400 L file's architecture is the zoo's mvitv2_l_40x3, whose exact count tests/core/test_zoo_counts.py
# asserts; the in21k files are checked against timm above.
PUBLISHED_MPARAMS = {
    "mvitv2_l.fb_in1k": (218, 0.5),
    "mvitv2_l.mmpretrain_in1k": (217.99, 0.005),
    "mvitv2_l_40x3.fb_ssv2": (213.1, 0.05),
}


@pytest.mark.parametrize("tag", sorted(PUBLISHED_MPARAMS))
def test_large_tags_match_the_published_parameter_count(tag):
    published, tolerance = PUBLISHED_MPARAMS[tag]
    with torch.device("meta"):
        count = sum(p.numel() for p in MViT(_config(tag)).parameters()) / 1e6
    assert abs(count - published) <= tolerance, count


def test_every_tag_is_covered():
    small = {t for t in CLASSIFIER_TAGS if get_weights(t).arch in SMALL_ARCHS}
    big = {t for t in CLASSIFIER_TAGS if t.endswith("fb_in21k")} | set(PUBLISHED_MPARAMS) | {"mvitv2_l_40x3.fb_k400"}
    assert small | big == set(CLASSIFIER_TAGS)


def test_video_heads_and_preprocessing():
    ssv2 = get_weights("mvitv2_s_16x4.fb_ssv2")
    assert ssv2.num_classes == 174 and ssv2.preprocessing.channel_order == "BGR"
    assert get_weights("mvitv2_l_40x3.fb_k400").preprocessing.test_views == (5, 3)
    assert get_weights("mvitv2_s_16x4.fb_k400").preprocessing.num_frames == 16


def test_class_sets_come_from_public_apis():
    assert len(class_names("imagenet-1k")) == 1000 and len(class_names("kinetics-400")) == 400
    assert class_names("ssv2") is None  # no public list: the data set's labels.json names them


def test_unknown_and_detector_tags():
    with pytest.raises(ConfigError, match="did you mean mvitv2_t.fb_in1k"):
        get_weights("mvitv2_t.fb_in1kk")
    assert get_weights("mvitv2_b") is get_weights("mvitv2_b.fb_in1k")  # a bare name: the default release
    with pytest.raises(ConfigError, match="train.init_checkpoint=zoo:mvitv2_t.fb_coco_mask_rcnn"):
        load_pretrained(None, get_weights("mvitv2_t.fb_coco_mask_rcnn"))


def _mkdirs(path: str) -> str:
    import os

    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def test_create_model_pretrained_forms(offline_cache):
    weights = get_weights("mvitv2_t.fb_in1k")
    source = MViT(_config(weights.tag))
    torch.save({"model_state": source.state_dict()}, _mkdirs(cache_path(weights.url)))
    by_name = create_model("mvitv2_t", pretrained=True, progress=False)  # the default release
    by_tag = create_model("mvitv2_t", pretrained="mvitv2_t.fb_in1k", progress=False)
    by_spec = create_model("mvitv2_t", checkpoint="zoo:mvitv2_t.fb_in1k")
    for model in (by_name, by_tag, by_spec):
        assert torch.equal(model.blocks[3].attn.qkv.weight, source.blocks[3].attn.qkv.weight)
    # Fine-tuning: a new head of 10 classes, the rest loaded (not strict, reported).
    tuned = create_model("mvitv2_t", pretrained=True, num_classes=10, progress=False)
    assert tuned.head.projection.out_features == 10
    assert torch.equal(tuned.blocks[0].attn.rel_pos_h, source.blocks[0].attn.rel_pos_h)
    with pytest.raises(ConfigError, match="are for mvitv2_b, not mvitv2_t"):
        create_model("mvitv2_t", pretrained="mvitv2_b.fb_in1k")
    with pytest.raises(ConfigError, match="not both"):
        create_model("mvitv2_t", pretrained=True, checkpoint="x.pyth")
