"""The MViTv2 transformer block: pooling attention, MLP and a max-pooled skip connection."""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn

from .attention import MultiScaleAttention
from .config import BlockSpec
from .layers import DropPath, Mlp, max_pool_nd
from .pooling import pool_tokens

__all__ = ["MultiScaleBlock"]

Grid = Tuple[int, ...]


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block with pooling attention and a max-pooled skip connection.

    Shapes: x (B, N, dim) on grid ``thw`` -> (B, N', dim_out) on the grid pooled by the block's q stride.
    With ``spec.dim_mul_in_att`` the attention changes the width (MViTv2 T/S/B); otherwise the MLP does (L/H).
    """

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        dim, dim_out = spec.dim, spec.dim_out
        ndim = len(spec.input_size)
        self.dim, self.dim_out = dim, dim_out
        self.has_cls = spec.has_cls
        self.dim_mul_in_att = spec.dim_mul_in_att
        att_dim = spec.attn_dim
        self.norm1 = nn.LayerNorm(dim, eps=spec.norm_eps)
        self.attn = MultiScaleAttention(spec)
        self.drop_path = DropPath(spec.drop_path) if spec.drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(att_dim, eps=spec.norm_eps)
        self.mlp = Mlp(att_dim, int(att_dim * spec.mlp_ratio), dim_out)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)
        self.pool_skip = None
        if spec.stride_q and math.prod(spec.stride_q) > 1:
            kernel = tuple(s + 1 if s > 1 else s for s in spec.stride_q)
            self.pool_skip = max_pool_nd(ndim)(kernel, spec.stride_q, tuple(k // 2 for k in kernel), ceil_mode=False)

    def _skip(self, x: torch.Tensor, thw: Grid) -> torch.Tensor:
        out, _ = pool_tokens(x.unsqueeze(1), self.pool_skip, thw, self.has_cls)
        return out.squeeze(1)

    def forward(self, x: torch.Tensor, thw: Grid) -> Tuple[torch.Tensor, Grid]:
        x_norm = self.norm1(x)
        x_attn, thw_out = self.attn(x_norm, thw)
        if self.dim_mul_in_att and self.dim != self.dim_out:
            x = self.proj(x_norm)
        x = self._skip(x, thw) + self.drop_path(x_attn)
        x_norm = self.norm2(x)
        x_mlp = self.mlp(x_norm)
        if not self.dim_mul_in_att and self.dim != self.dim_out:
            x = self.proj(x_norm)
        return x + self.drop_path(x_mlp), thw_out
