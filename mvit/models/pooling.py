"""Token pooling: the pooling operators of MViT's attention and skip connection, over 2-D or 3-D token grids.

Tokens are ``(B, N, heads, C)`` token-major tensors whose patch tokens lie on a grid ``thw`` (``(H, W)`` or
``(T, H, W)``), the class token (when present) first and kept aside while pooling. A grid is pooled as one
channels-last image of ``heads * C`` channels, except where oneDNN's bf16 kernels need channels-first (see
:func:`_bf16_weight_grad_needs_channels_first`).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import avg_pool_nd, channels_last, conv_nd, grid_size, max_pool_nd

__all__ = ["make_pool", "pool_grid", "pool_tokens"]

Grid = Tuple[int, ...]


def _bf16_weight_grad_needs_channels_first(x: torch.Tensor, pool: nn.Module) -> bool:
    """Whether a pooling convolution on ``x`` (B, C, *grid) must run channels-first to get a right bf16 weight gradient.

    oneDNN's AMX bf16 kernels for depthwise convolutions on channels-last input return wrong weight gradients
    (relative error 0.3-1.4, or garbage from uninitialised memory; torch 2.14.1) for 3-D grids of 2 frames, and in
    2-D and 3-D for an output width of 1 with a width stride > 1 (pytorch/pytorch#169688 is the forward's twin).
    Channels-first input is right to bf16 rounding. 3-D convolutions always take it in bf16 training: it also
    took half the time at the video S shapes; 2-D ones only in the faulty case (channels-last is 1.3-2x faster
    there otherwise). Forward and input gradients are right either way, so inference keeps channels-last.
    """
    if not isinstance(pool, (nn.Conv2d, nn.Conv3d)) or x.device.type != "cpu" or torch.jit.is_tracing():
        return False
    if not (torch.is_grad_enabled() and pool.weight.requires_grad):
        return False
    autocast_bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    if not (x.dtype == torch.bfloat16 or autocast_bf16):
        return False
    if isinstance(pool, nn.Conv3d):
        return True
    kernel, stride, padding = pool.kernel_size[-1], pool.stride[-1], pool.padding[-1]
    return stride > 1 and (x.shape[-1] + 2 * padding - kernel) // stride + 1 == 1


def make_pool(
    mode: str, kernel: Sequence[int], stride: Sequence[int], dim: int, ndim: int, eps: float
) -> Tuple[Optional[nn.Module], Optional[nn.Module]]:
    """The pooling operator of one of q, k, v and its norm: (None, None) without a kernel; a depthwise
    convolution and a LayerNorm for ``mode="conv"``; a max or average pooling (no norm) otherwise."""
    if not kernel:
        return None, None
    padding = tuple(k // 2 for k in kernel)
    if mode == "conv":
        pool = conv_nd(ndim)(dim, dim, tuple(kernel), tuple(stride), padding, groups=dim, bias=False)
        return pool, nn.LayerNorm(dim, eps=eps)
    pool_cls = max_pool_nd(ndim) if mode == "max" else avg_pool_nd(ndim)
    return pool_cls(tuple(kernel), tuple(stride), padding, ceil_mode=False), None


def _pool(x: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    """Pool a grid (B, heads * C, *grid) of ``heads`` heads of C channels; a depthwise pooling convolution (``C``
    groups, shared by the heads) runs as one convolution with ``heads * C`` groups and its weight repeated."""
    x = x.contiguous() if _bf16_weight_grad_needs_channels_first(x, pool) else channels_last(x)
    if not isinstance(pool, (nn.Conv2d, nn.Conv3d)):
        return pool(x)
    heads = x.shape[1] // pool.weight.shape[0]
    weight = pool.weight if heads == 1 else torch.cat([pool.weight] * heads)
    conv = F.conv2d if isinstance(pool, nn.Conv2d) else F.conv3d
    return conv(x, weight, None, pool.stride, pool.padding, pool.dilation, x.shape[1])


# torch.fx records one call that runs as written: the layout and the weight depend on run-time tensor properties.
torch.fx.wrap("_pool")


def pool_grid(
    x: torch.Tensor, pool: Optional[nn.Module], thw: Grid, has_cls: bool, norm: Optional[nn.Module] = None
) -> Tuple[torch.Tensor, Grid]:
    """Pool token-major ``x`` (B, N, heads, C) over its grid ``thw`` -> (B, N', heads, C), grid.

    Heads become channels of one channels-last grid ``(B, heads * C, *thw)`` (at most one copy, none when
    ``x`` is dense token-major) and the pooled grid reshapes back into tokens with a view. A depthwise pooling
    convolution (``C`` groups, shared by the heads) runs as one convolution with ``heads * C`` groups and its
    weight repeated per head. ``norm`` (conv mode) is applied to all tokens after pooling.
    """
    if pool is None:
        return x, thw
    B, _, heads, C = x.shape
    if has_cls:
        cls_tok, x = x[:, :1], x[:, 1:]
    # One explicit copy into a dense channels-last grid (a no-op when x is dense): pooling would otherwise
    # copy a strided input itself, in the forward and again in the convolution's backward.
    # (Explicit permutations instead of movedim(-1, 1): the TorchScript ONNX exporter mistranslates the latter.)
    n = len(thw)
    x = _pool(x.reshape(B, *thw, heads * C).permute(0, n + 1, *range(1, n + 1)), pool)
    thw = grid_size(x, n)
    x = x.permute(0, *range(2, n + 2), 1).reshape(B, -1, heads, C)
    if has_cls:
        x = torch.cat((cls_tok, x), dim=1)
    if norm is not None:
        x = norm(x)
    return x, thw


def pool_tokens(
    x: torch.Tensor, pool: Optional[nn.Module], thw: Grid, has_cls: bool, norm: Optional[nn.Module] = None
) -> Tuple[torch.Tensor, Grid]:
    """Pool the patch tokens of ``x`` (B, heads, N, C) over their grid ``thw``; the class token is kept
    aside and put back in front. ``norm`` (conv mode) is applied to all tokens after pooling.

    Returns (B, heads, N', C) (a transposed view of a token-major tensor) and the pooled grid.
    """
    x, thw = pool_grid(x.transpose(1, 2), pool, thw, has_cls, norm)
    return x.transpose(1, 2), thw
