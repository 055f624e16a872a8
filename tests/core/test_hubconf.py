"""hubconf.py: torch.hub.load from a local clone, an entry point per zoo model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from mvit import list_models
from mvit.checkpoint.hub import MIRROR_ENV
from mvit.models import MViT
from tests.core.releases import IMAGE_TAG, place_in_cache, register_tiny_releases, small_stand_in

ROOT = str(Path(__file__).resolve().parents[2])


def test_every_zoo_model_has_a_documented_entry_point():
    # What torch.hub.list / help read (they take GitHub repositories only): the module's public callables.
    spec = importlib.util.spec_from_file_location("hubconf", Path(ROOT) / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = [name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_")]
    assert sorted(entries) == list_models()
    assert "mvitv2_t.fb_in1k" in hubconf.mvitv2_t.__doc__ and "mvitv2_s_16x4.fb_k400" in hubconf.mvitv2_s_16x4.__doc__
    assert all(importlib.util.find_spec(name) for name in hubconf.dependencies)


def test_load_without_and_with_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # offline: the weights come from the cache
    register_tiny_releases(monkeypatch)
    random = torch.hub.load(ROOT, "mvitv2_tiny32", source="local", num_classes=3)
    assert isinstance(random, MViT) and random.num_classes == 3
    state = place_in_cache(IMAGE_TAG)
    loaded = torch.hub.load(ROOT, "mvitv2_tiny32", pretrained=True, source="local", progress=False)
    for (name, a), b in zip(state.items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_load_a_zoo_model_with_its_released_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")
    state = small_stand_in("mvitv2_t")
    place_in_cache("mvitv2_t.fb_in1k", state)
    model = torch.hub.load(ROOT, "mvitv2_t", pretrained=True, source="local", progress=False)
    assert torch.equal(model.blocks[3].attn.qkv.weight, state["blocks.3.attn.qkv.weight"])
