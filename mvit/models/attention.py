"""Multi-scale pooling attention with decomposed relative position embeddings, for 2-D and 3-D inputs.

Tensor layout inside attention: ``(B, heads, N, C)`` where ``N = [1 +] prod(thw)`` (the class token, when
present, is the first token and is kept aside while pooling) and ``thw`` is the token grid ``(H, W)`` or
``(T, H, W)``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import BlockSpec
from .layers import DropPath, Mlp, avg_pool_nd, conv_nd, max_pool_nd

__all__ = [
    "MultiScaleAttention",
    "MultiScaleBlock",
    "decomposed_rel_pos_bias",
    "pool_tokens",
    "rel_pos_index",
    "resize_rel_pos",
]

Grid = Tuple[int, ...]


def pool_tokens(
    x: torch.Tensor, pool: Optional[nn.Module], thw: Grid, has_cls: bool, norm: Optional[nn.Module] = None
) -> Tuple[torch.Tensor, Grid]:
    """Pool the patch tokens of ``x`` (B, heads, N, C) over their grid ``thw``; the class token is kept
    aside and put back in front. ``norm`` (conv mode) is applied to all tokens after pooling."""
    if pool is None:
        return x, thw
    B, heads, _, C = x.shape
    if has_cls:
        cls_tok, x = x[:, :, :1], x[:, :, 1:]
    x = x.reshape(B * heads, *thw, C).movedim(-1, 1)
    x = pool(x)
    thw = tuple(x.shape[2:])
    x = x.reshape(B, heads, C, -1).transpose(2, 3)
    if has_cls:
        x = torch.cat((cls_tok, x), dim=2)
    if norm is not None:
        x = norm(x)
    return x, thw


def rel_pos_index(q_size: int, k_size: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """Index into a relative-position table for every (query, key) pair, (q_size, k_size).

    When q and k have different sizes the coordinates of the shorter one are scaled up (official rule), so
    that the table of length ``2 * max(q_size, k_size) - 1`` is indexed by distances on the finer grid.
    """
    q_ratio = max(k_size / q_size, 1.0)
    k_ratio = max(q_size / k_size, 1.0)
    dist = (
        torch.arange(q_size, device=device)[:, None] * q_ratio - torch.arange(k_size, device=device)[None, :] * k_ratio
    )
    dist += (k_size - 1) * k_ratio
    return dist.long()


def resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly interpolate a (L, C) relative-position table to (length, C); identity when L == length."""
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.t().unsqueeze(0), size=length, mode="linear")
    return resized.squeeze(0).t()


def decomposed_rel_pos_bias(
    q: torch.Tensor,
    q_thw: Grid,
    k_thw: Grid,
    rel_pos_h: Optional[torch.Tensor],
    rel_pos_w: Optional[torch.Tensor],
    rel_pos_t: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Decomposed relative position bias of MViTv2 for the patch tokens.

    bias[b, n, (t, h, w), (t', h', w')] = q[b, n, (t, h, w)] . (R_h[h, h'] + R_w[w, w'] + R_t[t, t'])

    Args:
        q: patch queries (B, heads, prod(q_thw), C), class token removed.
        q_thw, k_thw: query and key grids, (H, W) or (T, H, W).
        rel_pos_h, rel_pos_w, rel_pos_t: tables (L, C); each is interpolated when its length differs from
            ``2 * max(q_size, k_size) - 1`` (inputs of another size than the build size). ``None`` skips an axis.

    Returns:
        (B, heads, prod(q_thw), prod(k_thw)), materialised once by a broadcast add.
    """
    B, heads, _, C = q.shape
    q_t, q_h, q_w = (1,) * (3 - len(q_thw)) + tuple(q_thw)
    k_t, k_h, k_w = (1,) * (3 - len(k_thw)) + tuple(k_thw)
    r_q = q.reshape(B, heads, q_t, q_h, q_w, C)
    bias = q.new_zeros(())
    if rel_pos_h is not None:
        table = resize_rel_pos(rel_pos_h, 2 * max(q_h, k_h) - 1)
        rel = torch.einsum("bnthwc,hkc->bnthwk", r_q, table[rel_pos_index(q_h, k_h, q.device)])
        bias = bias + rel[:, :, :, :, :, None, :, None]
    if rel_pos_w is not None:
        table = resize_rel_pos(rel_pos_w, 2 * max(q_w, k_w) - 1)
        rel = torch.einsum("bnthwc,wkc->bnthwk", r_q, table[rel_pos_index(q_w, k_w, q.device)])
        bias = bias + rel[:, :, :, :, :, None, None, :]
    if rel_pos_t is not None:
        table = resize_rel_pos(rel_pos_t, 2 * max(q_t, k_t) - 1)
        rel = torch.einsum("bnthwc,tkc->bnthwk", r_q, table[rel_pos_index(q_t, k_t, q.device)])
        bias = bias + rel[:, :, :, :, :, :, None, None]
    bias = bias.expand(B, heads, q_t, q_h, q_w, k_t, k_h, k_w)
    return bias.reshape(B, heads, q_t * q_h * q_w, k_t * k_h * k_w)


def _window_partition(x: torch.Tensor, thw: Grid, window: int) -> Tuple[torch.Tensor, Grid]:
    """(B', H*W, C) -> (B' * nW, window*window, C), zero-padding H and W up to multiples of ``window``."""
    Bp, _, C = x.shape
    H, W = thw
    x = x.reshape(Bp, H, W, C)
    pad_h, pad_w = (-H) % window, (-W) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.reshape(Bp, Hp // window, window, Wp // window, window, C).transpose(2, 3)
    return x.reshape(-1, window * window, C), (Hp // window, Wp // window)


def _window_unpartition(x: torch.Tensor, windows: Grid, window: int, thw: Grid) -> torch.Tensor:
    """Inverse of :func:`_window_partition`, cropping the padding: -> (B', H*W, C)."""
    nh, nw = windows
    C = x.shape[-1]
    x = x.reshape(-1, nh, nw, window, window, C).transpose(2, 3).reshape(-1, nh * window, nw * window, C)
    H, W = thw
    return x[:, :H, :W].reshape(x.shape[0], H * W, C)


class MultiScaleAttention(nn.Module):
    """Pooling attention of MViTv2.

    q, k and v are pooled over the token grid (q by ``stride_q``, k and v by ``stride_kv``); attention
    logits get the decomposed relative position bias; the pooled q is added back to the output (residual
    pooling). With ``window_size`` > 0 (2-D only) attention is computed inside non-overlapping windows, as in
    detectron2's MViTv2 backbone.

    Shapes: x (B, N, dim) on grid ``thw`` -> (B, N', dim_out) on the pooled grid.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        spec: BlockSpec,
        *,
        qkv_bias: bool = True,
        mode: str = "conv",
        pool_first: bool = False,
        has_cls: bool = False,
        rel_pos_spatial: bool = True,
        rel_pos_temporal: bool = False,
        rel_pos_zero_init: bool = False,
        residual_pooling: bool = True,
        residual_pooling_cls: bool = False,
        norm_eps: float = 1e-6,
        attn_impl: str = "auto",
    ) -> None:
        super().__init__()
        ndim = len(spec.input_size)
        self.num_heads = spec.num_heads
        self.dim_out = dim_out
        self.head_dim = dim_out // spec.num_heads
        self.scale = self.head_dim**-0.5
        self.has_cls = has_cls
        self.pool_first = pool_first
        self.residual_pooling = residual_pooling
        self.residual_pooling_cls = residual_pooling_cls
        self.window_size = spec.window_size
        self.attn_impl = attn_impl
        stride_q = spec.stride_q or (1,) * ndim
        stride_kv = spec.stride_kv or (1,) * ndim
        if self.window_size:
            self.q_window = self.window_size // stride_q[-1]
            self.kv_window = self.window_size // stride_kv[-1]

        if pool_first:
            self.q = nn.Linear(dim, dim_out, bias=qkv_bias)
            self.k = nn.Linear(dim, dim_out, bias=qkv_bias)
            self.v = nn.Linear(dim, dim_out, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, dim_out * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)

        pool_dim = (dim if pool_first else dim_out) // spec.num_heads
        self.pool_q, self.norm_q = self._make_pool(mode, spec.kernel_q, spec.stride_q, pool_dim, ndim, norm_eps)
        self.pool_k, self.norm_k = self._make_pool(mode, spec.kernel_kv, spec.stride_kv, pool_dim, ndim, norm_eps)
        self.pool_v, self.norm_v = self._make_pool(mode, spec.kernel_kv, spec.stride_kv, pool_dim, ndim, norm_eps)

        self.rel_pos_h = self.rel_pos_w = self.rel_pos_t = None
        if rel_pos_spatial:
            # Table length as in the official code, from the block's input grid and strides; other input
            # sizes interpolate it at run time.
            sizes = []
            for axis in (-2, -1):
                size = spec.input_size[axis]
                sizes.append(2 * max(size // stride_q[axis], size // stride_kv[axis]) - 1)
            self.rel_pos_h = nn.Parameter(torch.zeros(sizes[0], self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(sizes[1], self.head_dim))
        if rel_pos_temporal:
            self.rel_pos_t = nn.Parameter(torch.zeros(2 * spec.input_size[0] - 1, self.head_dim))
        if not rel_pos_zero_init:
            for table in (self.rel_pos_h, self.rel_pos_w, self.rel_pos_t):
                if table is not None:
                    nn.init.trunc_normal_(table, std=0.02)

    @staticmethod
    def _make_pool(
        mode: str, kernel: Sequence[int], stride: Sequence[int], dim: int, ndim: int, eps: float
    ) -> Tuple[Optional[nn.Module], Optional[nn.Module]]:
        if not kernel:
            return None, None
        padding = tuple(k // 2 for k in kernel)
        if mode == "conv":
            pool = conv_nd(ndim)(dim, dim, tuple(kernel), tuple(stride), padding, groups=dim, bias=False)
            return pool, nn.LayerNorm(dim, eps=eps)
        pool_cls = max_pool_nd(ndim) if mode == "max" else avg_pool_nd(ndim)
        return pool_cls(tuple(kernel), tuple(stride), padding, ceil_mode=False), None

    def _project_qkv(self, x: torch.Tensor, thw: Grid):
        B, N, _ = x.shape
        if not self.pool_first:
            q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            q, q_thw = pool_tokens(q, self.pool_q, thw, self.has_cls, self.norm_q)
            k, k_thw = pool_tokens(k, self.pool_k, thw, self.has_cls, self.norm_k)
            v, _ = pool_tokens(v, self.pool_v, thw, self.has_cls, self.norm_v)
            return q, k, v, q_thw, k_thw
        # MViTv1 option: pool the input (folded into heads), then project.
        x = x.reshape(B, N, self.num_heads, -1).transpose(1, 2)
        q, q_thw = pool_tokens(x, self.pool_q, thw, self.has_cls, self.norm_q)
        k, k_thw = pool_tokens(x, self.pool_k, thw, self.has_cls, self.norm_k)
        v, _ = pool_tokens(x, self.pool_v, thw, self.has_cls, self.norm_v)

        def project(t: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
            n = t.shape[2]
            t = linear(t.transpose(1, 2).reshape(B, n, -1))
            return t.reshape(B, n, self.num_heads, self.head_dim).transpose(1, 2)

        return project(q, self.q), project(k, self.k), project(v, self.v), q_thw, k_thw

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_thw: Grid, k_thw: Grid) -> torch.Tensor:
        """softmax(q k^T * scale + rel-pos bias) v for (B, heads, N, C) tensors (class token first if any)."""
        sp = 1 if self.has_cls else 0
        bias = None
        if self.rel_pos_h is not None or self.rel_pos_t is not None:
            bias = decomposed_rel_pos_bias(q[:, :, sp:], q_thw, k_thw, self.rel_pos_h, self.rel_pos_w, self.rel_pos_t)
        impl = self.attn_impl
        if impl == "auto":
            # SDPA with a float mask is faster for inference but falls back to its math path (slower than
            # the explicit one) when the mask needs a gradient (shared/PERF.md).
            impl = "sdpa" if bias is None or not (torch.is_grad_enabled() and bias.requires_grad) else "explicit"
        if impl == "sdpa":
            mask = None if bias is None else (F.pad(bias, (sp, 0, sp, 0)) if sp else bias)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype) if mask is not None else None)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if bias is not None:
            if sp:
                attn[:, :, sp:, sp:] += bias
            else:
                attn = attn + bias
        return attn.softmax(dim=-1) @ v

    def forward(self, x: torch.Tensor, thw: Grid) -> Tuple[torch.Tensor, Grid]:
        B = x.shape[0]
        q, k, v, q_thw, k_thw = self._project_qkv(x, thw)

        if self.window_size:
            heads, C = self.num_heads, self.head_dim
            q_win, q_windows = _window_partition(q.reshape(B * heads, -1, C), q_thw, self.q_window)
            k_win, kv_windows = _window_partition(k.reshape(B * heads, -1, C), k_thw, self.kv_window)
            v_win, _ = _window_partition(v.reshape(B * heads, -1, C), k_thw, self.kv_window)
            if q_windows != kv_windows:
                raise ValueError(
                    f"window attention: query grid {q_thw} and key grid {k_thw} give {q_windows} and "
                    f"{kv_windows} windows of {self.q_window} / {self.kv_window}; use an input size whose "
                    "token grid is divisible consistently"
                )
            out = self._attend(
                q_win.unsqueeze(1),
                k_win.unsqueeze(1),
                v_win.unsqueeze(1),
                (self.q_window, self.q_window),
                (self.kv_window, self.kv_window),
            ).squeeze(1)
            out = _window_unpartition(out, q_windows, self.q_window, q_thw).reshape(B, heads, -1, C)
        else:
            out = self._attend(q, k, v, q_thw, k_thw)

        if self.residual_pooling:
            if self.has_cls and not self.residual_pooling_cls:
                out = torch.cat((out[:, :, :1], out[:, :, 1:] + q[:, :, 1:]), dim=2)
            else:
                out = out + q
        out = out.transpose(1, 2).reshape(B, -1, self.dim_out)
        return self.proj(out), q_thw


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block with pooling attention and a max-pooled skip connection.

    Shapes: x (B, N, dim) on grid ``thw`` -> (B, N', dim_out) on the grid pooled by the block's q stride.
    With ``dim_mul_in_att`` the attention changes the width (MViTv2 T/S/B); otherwise the MLP does (L/H).
    """

    def __init__(
        self,
        spec: BlockSpec,
        *,
        mlp_ratio: float = 4.0,
        dim_mul_in_att: bool = True,
        norm_eps: float = 1e-6,
        **attn_kwargs,
    ) -> None:
        super().__init__()
        dim, dim_out = spec.dim, spec.dim_out
        ndim = len(spec.input_size)
        self.dim, self.dim_out = dim, dim_out
        self.has_cls = attn_kwargs.get("has_cls", False)
        self.dim_mul_in_att = dim_mul_in_att
        att_dim = dim_out if dim_mul_in_att else dim
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiScaleAttention(dim, att_dim, spec, norm_eps=norm_eps, **attn_kwargs)
        self.drop_path = DropPath(spec.drop_path) if spec.drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(att_dim, eps=norm_eps)
        self.mlp = Mlp(att_dim, int(att_dim * mlp_ratio), dim_out)
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
