"""Initialising a detector from an ImageNet checkpoint of the core reports exactly the keys used and left new."""

import json
import os
import pickle

import pytest
import torch

pytest.importorskip("detectron2.modeling", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")

from detectron2.config import LazyConfig, instantiate  # noqa: E402

import mvit  # noqa: E402
from mvit.checkpoint import save_weights  # noqa: E402
from projects.detection.train_net import initialize_from_checkpoint  # noqa: E402

CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "..", "projects", "detection", "configs", "mask_rcnn_mvitv2_t_3x.py"
)
PREFIX = "backbone.bottom_up."


@pytest.fixture(scope="module")
def imagenet_model(perturb):
    torch.manual_seed(0)
    return perturb(mvit.create_model("mvitv2_t"))


def _write(model, fmt: str, directory) -> str:
    state = model.state_dict()
    if fmt == "official":
        path = os.path.join(directory, "MViTv2_T_in1k.pyth")
        torch.save({"model_state": state, "epoch": 300}, path)
    elif fmt == "mmpretrain":
        path = os.path.join(directory, "mvitv2-tiny_in1k.pth")
        renamed = {}
        for k, v in state.items():
            k = k.replace("patch_embed.proj.", "patch_embed.projection.").replace("head.projection.", "head.fc.")
            k = "backbone.norm3." + k[len("norm.") :] if k.startswith("norm.") else k
            renamed[k if k.startswith(("head.", "backbone.")) else "backbone." + k] = v
        torch.save({"state_dict": renamed, "meta": {"epoch": 300}}, path)
    else:
        path = os.path.join(directory, "mvitv2_t.pth")
        save_weights(model, path)
    return path


@pytest.mark.parametrize("fmt", ["official", "mmpretrain", "mvit"])
def test_imagenet_init_reports_used_and_new_keys(imagenet_model, fmt, tmp_path):
    path = _write(imagenet_model, fmt, str(tmp_path))
    detector = instantiate(LazyConfig.load(CONFIG).model)
    out_dir = str(tmp_path / "out")
    report = initialize_from_checkpoint(detector, path, out_dir)

    source = imagenet_model.state_dict()
    backbone_keys = [k for k in detector.state_dict() if k.startswith(PREFIX)]
    out_norms = {f"{PREFIX}scale{s}_norm.{p}" for s in range(2, 6) for p in ("weight", "bias")}
    assert report["kind"].startswith("backbone")
    assert set(report["used"]) == set(backbone_keys) - out_norms
    assert report["resized"] == []
    assert set(report["new"]) == set(detector.state_dict()) - set(report["used"])
    assert out_norms <= set(report["new"])
    assert {k for k in report["new"] if k.startswith(PREFIX)} == out_norms
    assert sorted(report["unused"]) == ["head.projection.bias", "head.projection.weight", "norm.bias", "norm.weight"]
    state = detector.state_dict()
    for key in report["used"]:
        assert torch.equal(state[key], source[key[len(PREFIX) :]]), key
    with open(os.path.join(out_dir, "init_report.json")) as f:
        assert json.load(f) == report


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_detector_checkpoint_loads_whole_model(tmp_path, suffix):
    """A whole-detector checkpoint goes to DetectionCheckpointer: detectron2's released model zoo files (.pkl:
    a pickle of numpy arrays, ``__author__`` set) and the .pth files this trainer writes."""
    cfg = LazyConfig.load(CONFIG)
    torch.manual_seed(1)
    source = instantiate(cfg.model)
    path = str(tmp_path / f"model_final{suffix}")
    if suffix == ".pkl":
        with open(path, "wb") as f:
            state = {k: v.numpy() for k, v in source.state_dict().items()}
            pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, f)
    else:
        torch.save({"model": source.state_dict(), "iteration": 9}, path)
    torch.manual_seed(2)
    target = instantiate(cfg.model)
    report = initialize_from_checkpoint(target, path)
    assert report["kind"] == "detectron2"
    expected = source.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in target.state_dict().items())


def test_empty_init_checkpoint_keeps_everything_new():
    detector = instantiate(LazyConfig.load(CONFIG).model)
    report = initialize_from_checkpoint(detector, "")
    assert report["used"] == [] and set(report["new"]) == set(detector.state_dict())


@pytest.mark.parametrize("tag", ["mvitv2_t.fb_coco_mask_rcnn", "mvitv2_t.fb_in1k"])
def test_zoo_tags_resolve_through_the_cache(tag, imagenet_model, tmp_path, monkeypatch):
    """``train.init_checkpoint=zoo:<tag>``: the release's file from torch.hub's cache (placed there: no network)."""
    from mvit.checkpoint.hub import MIRROR_ENV, cache_path
    from mvit.models.weights import get_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # nothing listens: a download would fail
    weights = get_weights(tag)
    cached = cache_path(weights.url)
    os.makedirs(os.path.dirname(cached))
    cfg = LazyConfig.load(CONFIG)
    if weights.detector:
        torch.manual_seed(1)
        source = instantiate(cfg.model).state_dict()
        with open(cached, "wb") as f:
            state = {k: v.numpy() for k, v in source.items()}
            pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, f)
    else:
        torch.save({"model_state": imagenet_model.state_dict()}, cached)
        source = {PREFIX + k: v for k, v in imagenet_model.state_dict().items()}
    target = instantiate(cfg.model)
    report = initialize_from_checkpoint(target, f"zoo:{tag}")
    assert report["kind"] == ("detectron2" if weights.detector else "backbone (official format)")
    state = target.state_dict()
    assert torch.equal(state[f"{PREFIX}blocks.3.attn.qkv.weight"], source[f"{PREFIX}blocks.3.attn.qkv.weight"])
