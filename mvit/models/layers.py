"""Small building blocks of MViT: patch embedding, MLP, stochastic depth, classifier head."""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

__all__ = [
    "ClassifierHead",
    "DropPath",
    "Mlp",
    "PatchEmbed",
    "avg_pool_nd",
    "channels_last",
    "conv_nd",
    "drop_path",
    "grid_size",
    "max_pool_nd",
]


def grid_size(x: torch.Tensor, ndim: int) -> Tuple[int, ...]:
    """The token grid of a (B, C, *grid) tensor with ``ndim`` grid axes, one value per axis (not ``x.shape[2:]``:
    ``torch.fx`` then traces each axis as its own value, which the reshapes downstream can unpack)."""
    return tuple(x.shape[2 + i] for i in range(ndim))


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) or (B, C, T, H, W) in channels-last memory format (same values, a copy unless it already
    is). Skipped while tracing for the TorchScript ONNX exporter, which has no memory formats."""
    if torch.jit.is_tracing():
        return x
    return x.contiguous(memory_format=torch.channels_last if x.ndim == 4 else torch.channels_last_3d)


# torch.fx records these as single calls that run as written (their branches read run-time tensor properties).
torch.fx.wrap("channels_last")


def conv_nd(ndim: int) -> type:
    """``nn.Conv2d`` or ``nn.Conv3d``: one code path for images and video."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[ndim]


def max_pool_nd(ndim: int) -> type:
    return {2: nn.MaxPool2d, 3: nn.MaxPool3d}[ndim]


def avg_pool_nd(ndim: int) -> type:
    return {2: nn.AvgPool2d, 3: nn.AvgPool3d}[ndim]


class PatchEmbed(nn.Module):
    """Strided convolution that turns pixels into tokens.

    (B, C, H, W) -> (B, H'W', D) for images, (B, C, T, H, W) -> (B, T'H'W', D) for video; also returns the
    token grid (H', W') or (T', H', W').
    """

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        kernel: Sequence[int],
        stride: Sequence[int],
        padding: Sequence[int],
    ) -> None:
        super().__init__()
        self.ndim = len(kernel)
        self.proj = conv_nd(self.ndim)(in_chans, embed_dim, tuple(kernel), tuple(stride), tuple(padding))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, ...]]:
        # A channels-last output makes the tokens (B, N, D) contiguous without a copy (the input is small).
        x = self.proj(channels_last(x))
        return x.flatten(2).transpose(1, 2), grid_size(x, self.ndim)


class Mlp(nn.Module):
    """Linear -> GELU -> Linear (official names ``fc1`` / ``fc2``)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Zero whole samples of ``x`` with probability ``drop_prob`` in training, scaling the others by 1 / keep."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


torch.fx.wrap("drop_path")  # the mask's shape reads x.ndim


class DropPath(nn.Module):
    """Stochastic depth per sample. Written here (four lines) so that the core does not depend on timm."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class ClassifierHead(nn.Module):
    """Dropout -> Linear on pooled features (official names ``dropout`` / ``projection``); logits, no softmax."""

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.projection = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.dropout(x))
