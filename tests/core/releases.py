"""Tiny stand-ins for released weights: a zoo model and a weights tag small enough for a CPU test, registered for
one test (monkeypatch removes them), with a file of their weights placed in torch.hub's cache."""

from __future__ import annotations

import os

import torch

from mvit.checkpoint.hub import cache_path
from mvit.models import MViT, zoo
from mvit.models import weights as registry
from mvit.models.weights import Preprocessing, Weights
from tests.core.conftest import tiny_config

IMAGE_TAG = "mvitv2_tiny32.fb_in1k"
VIDEO_TAG = "mvitv2_tiny32_4x2.fb_k400"
_K400 = dict(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))


def register_tiny_releases(monkeypatch) -> None:
    """A 1000-class image model (crop 32 after resizing to 36, bicubic) and a 400-class video model (4 frames one
    every 2, 32x32), their releases under example URLs, as the zoo and registry entries of real ones."""
    image = lambda: tiny_config(2, num_classes=1000)  # noqa: E731
    video = lambda: tiny_config(3, num_classes=400)  # noqa: E731
    for name, build in (("mvitv2_tiny32", image), ("mvitv2_tiny32_4x2", video)):
        monkeypatch.setitem(zoo._REGISTRY, name, zoo.ModelInfo(name, build, "test", 0, 0.0))
    releases = (
        Weights(IMAGE_TAG, "https://dl.example.org/mvit/Tiny32_in1k.pyth", "test", "official", "imagenet-1k",
                "imagenet-1k", 1000, preprocessing=Preprocessing(crop_size=32, resize_size=36)),
        Weights(VIDEO_TAG, "https://dl.example.org/mvit/Tiny32_4x2_k400.pyth", "test", "official", "kinetics-400",
                "kinetics-400", 400, preprocessing=Preprocessing(crop_size=32, resize_size=32, num_frames=4,
                                                                 sampling_rate=2, interpolation="bilinear", **_K400)),
    )  # fmt: skip
    for release in releases:
        monkeypatch.setitem(registry._REGISTRY, release.tag, release)


def place_in_cache(tag: str, state: dict | None = None) -> dict:
    """Write random weights of ``tag``'s model (or ``state``) at its cache path, in the official layout."""
    from mvit.api import resolve_config

    weights = registry.get_weights(tag)
    state = state if state is not None else MViT(resolve_config(tag)).state_dict()
    path = cache_path(weights.url)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"model_state": state}, path)
    return state


def small_stand_in(arch: str) -> dict:
    """A full-size state dict of ``arch`` in a small file: each tensor one random row, repeated (a stride-0 view)."""
    from mvit.api import resolve_config

    with torch.device("meta"):
        shapes = {name: t.shape for name, t in MViT(resolve_config(arch)).state_dict().items()}
    return {name: (torch.randn(shape[-1] if len(shape) else ()) * 0.02).expand(shape) for name, shape in shapes.items()}
