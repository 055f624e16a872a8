"""Stand-ins for the engine's unit tests: a tiny model, a synthetic image set and a small config."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from mvit.config import get_cfg


class TinyNet(nn.Module):
    """A 2-block patch model with dropout (it consumes the global RNG, as drop path does)."""

    def __init__(self, num_classes: int = 3, dim: int = 8, drop: float = 0.2) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, 4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, dim))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Dropout(drop)) for _ in range(2)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, 4, dim) for 8x8 inputs
        for block in self.blocks:
            t = t + block(t)
        return self.head(self.norm(t).mean(1))


class NoisyImages(Dataset):
    """``n`` random 8x8 images whose mean encodes the label; the noise is drawn from the global RNG, as
    augmentations are, so an item is only reproducible under the engine's per-item seeding."""

    classes = ["a", "b", "c"]

    def __init__(self, n: int = 24) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        label = index % 3
        return torch.randn(3, 8, 8) * 0.5 + label, label, index


def small_cfg(**overrides):
    """Core defaults shrunk for a CPU unit test (no mixup, constant-ish schedule)."""
    cfg = get_cfg()
    cfg.MODEL.NUM_CLASSES = 3
    cfg.TRAIN.BATCH_SIZE = 4
    cfg.SOLVER.MAX_EPOCH = 2
    cfg.SOLVER.WARMUP_EPOCHS = 0.5
    cfg.SOLVER.BASE_LR = 0.05
    cfg.SOLVER.BASE_LR_BATCH_SIZE = 0
    cfg.MIXUP.ENABLE = False
    cfg.DATA_LOADER.NUM_WORKERS = 0
    for key, value in overrides.items():
        node = cfg
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    return cfg


@pytest.fixture
def tiny_net():
    return TinyNet


@pytest.fixture
def noisy_images():
    return NoisyImages


@pytest.fixture
def make_cfg():
    return small_cfg
