"""Multi-scale pooling attention with decomposed relative position embeddings, for 2-D and 3-D inputs.

Layouts. Public helpers take ``(B, heads, N, C)`` tensors, where ``N = [1 +] prod(thw)`` (the class token, when
present, is the first token and is kept aside while pooling) and ``thw`` is the token grid ``(H, W)`` or
``(T, H, W)``. Inside :class:`MultiScaleAttention` tokens stay token-major, ``(B, N, heads, C)`` in memory, from
the qkv projection to the output projection: a token grid is a channels-last image, pooling outputs reshape into
tokens with views, ``scaled_dot_product_attention`` reads transposed views and writes its output token-major, so
the heads merge back into channels with a view.

Attention kernels (``attn_impl``):

- ``"explicit"``: ``softmax(q k^T * scale + bias) v``, the reference (and the one that can expose attention maps).
- ``"sdpa"``: ``F.scaled_dot_product_attention``. The decomposed bias is ``terms @ onehot(k)^T``, where ``terms``
  (B, heads, Nq, kt + kh + kw) are the small per-axis products q . R_axis and ``onehot(k)`` the keys' grid
  coordinates. Without gradients that product is built once, by a matmul, as SDPA's float mask. With gradients
  (a mask that requires grad sends SDPA to its slow math path) it is folded into SDPA's own matmul instead:
  ``[q, terms / scale] . [k, onehot(k)]`` with v zero-padded, and SDPA runs without a mask. Both are exact.
  (The explicit path keeps the broadcast add of :func:`decomposed_rel_pos_bias`: it is the definition, and
  FLOP counters such as fvcore count it as the papers do.)
- ``"auto"`` (default): ``"sdpa"``, except for training on CPU with small attention matrices, where the explicit
  path is faster (see ``_FOLD_MIN_LOGITS``).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import BlockSpec
from .layers import DropPath, Mlp, avg_pool_nd, channels_last, conv_nd, max_pool_nd

__all__ = [
    "MultiScaleAttention",
    "MultiScaleBlock",
    "decomposed_rel_pos_bias",
    "pool_tokens",
    "rel_pos_index",
    "resize_rel_pos",
]

Grid = Tuple[int, ...]

# With gradients, "auto" folds the bias into SDPA for attention matrices of at least this many logits per head
# and uses the explicit path below it: on CPU (fp32, batch 8) the fold takes 0.74-0.83x the time of the explicit
# path at 784x784 and 3136x196 logits, 1.1-1.3x at 196x784 and smaller (SDPA's fixed cost and wider matmuls).
_FOLD_MIN_LOGITS = 2**18


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


def _pool_grid(
    x: torch.Tensor, pool: Optional[nn.Module], thw: Grid, has_cls: bool, norm: Optional[nn.Module] = None
) -> Tuple[torch.Tensor, Grid]:
    """Pool token-major ``x`` (B, N, heads, C) over its grid ``thw`` -> (B, N', heads, C), grid.

    Heads become channels of one channels-last grid ``(B, heads * C, *thw)`` (at most one copy, none when
    ``x`` is dense token-major) and the pooled grid reshapes back into tokens with a view. A depthwise pooling
    convolution (``C`` groups, shared by the heads) runs as one convolution with ``heads * C`` groups and its
    weight repeated per head.
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
    x = x.reshape(B, *thw, heads * C).permute(0, n + 1, *range(1, n + 1))
    x = x.contiguous() if _bf16_weight_grad_needs_channels_first(x, pool) else channels_last(x)
    if isinstance(pool, (nn.Conv2d, nn.Conv3d)):
        weight = pool.weight if heads == 1 else torch.cat([pool.weight] * heads)
        conv = F.conv2d if n == 2 else F.conv3d
        x = conv(x, weight, None, pool.stride, pool.padding, pool.dilation, heads * C)
    else:
        x = pool(x)
    thw = tuple(x.shape[2:])
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
    x, thw = _pool_grid(x.transpose(1, 2), pool, thw, has_cls, norm)
    return x.transpose(1, 2), thw


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


def _grid3(thw: Grid) -> Tuple[int, int, int]:
    """(H, W) -> (1, H, W); (T, H, W) unchanged."""
    return (1,) * (3 - len(thw)) + tuple(thw)


def _rel_pos_terms(
    q: torch.Tensor,
    q_thw: Grid,
    k_thw: Grid,
    tables: Sequence[Optional[torch.Tensor]],
    multiplier: Optional[float] = None,
) -> List[Tuple[int, torch.Tensor]]:
    """Per-axis terms of the decomposed bias, ``q . R_axis[q_pos, k_pos]``.

    Args:
        q: patch queries (B, heads, prod(q_thw), C), any strides.
        q_thw, k_thw: grids (H, W) or (T, H, W); ``tables`` holds (rel_pos_t, rel_pos_h, rel_pos_w).
        multiplier: optional factor folded into the (small) gathered tables instead of into the terms.

    Returns:
        ``[(axis, term)]`` for the axes with a table (0, 1, 2 for t, h, w), each term (B, heads, prod(q_thw),
        k_axis) and contiguous.
    """
    B, heads, n_q, C = q.shape
    q_sizes, k_sizes = _grid3(q_thw), _grid3(k_thw)
    r_q = q.reshape(B, heads, *q_sizes, C)
    subscripts = ("bnthwc,tkc->bnthwk", "bnthwc,hkc->bnthwk", "bnthwc,wkc->bnthwk")
    terms = []
    for axis, table in enumerate(tables):
        if table is None:
            continue
        q_size, k_size = q_sizes[axis], k_sizes[axis]
        rel = resize_rel_pos(table, 2 * max(q_size, k_size) - 1)[rel_pos_index(q_size, k_size, q.device)]
        if multiplier is not None:
            rel = rel * multiplier
        # Tables are kept in float32; under autocast q is bfloat16 / float16 (einsum does not promote).
        term = torch.einsum(subscripts[axis], r_q, rel.to(q.dtype))
        terms.append((axis, term.reshape(B, heads, n_q, k_size)))
    return terms


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
        (B, heads, prod(q_thw), prod(k_thw)), materialised once by a broadcast add of the per-axis terms.
    """
    B, heads, n_q, _ = q.shape
    q_sizes, k_sizes = _grid3(q_thw), _grid3(k_thw)
    bias = q.new_zeros(())
    for axis, term in _rel_pos_terms(q, q_thw, k_thw, (rel_pos_t, rel_pos_h, rel_pos_w)):
        shape = [B, heads, *q_sizes, 1, 1, 1]
        shape[5 + axis] = k_sizes[axis]
        bias = bias + term.view(shape)  # contiguous terms: the sum is laid out contiguously too
    return bias.expand(B, heads, *q_sizes, *k_sizes).reshape(B, heads, n_q, math.prod(k_sizes))


def _bias_matmul_operands(
    q: torch.Tensor,
    q_thw: Grid,
    k_thw: Grid,
    tables: Sequence[Optional[torch.Tensor]],
    sp: int,
    multiplier: Optional[float] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The decomposed bias as a product ``terms @ one_hot.T``, for queries and keys with ``sp`` class tokens first.

    Returns terms (B, heads, sp + Nq, E), the per-axis terms side by side (E = kt + kh + kw over the axes with a
    table, times ``multiplier``), and one_hot (sp + Nk, E), each key's grid coordinates; the class tokens get
    zero rows. Each entry of the product has two or three non-zero products, all by 1.0: exactly the bias of
    :func:`decomposed_rel_pos_bias`. As a matmul it is written in one pass (in bf16 2-12x faster than the
    broadcast add, whose rows are only 7-28 elements long), and it folds into SDPA's own matmul.
    """
    terms = _rel_pos_terms(q[:, :, sp:], q_thw, k_thw, tables, multiplier)
    k_sizes = _grid3(k_thw)
    coords = torch.arange(math.prod(k_sizes), device=q.device)
    strides = (k_sizes[1] * k_sizes[2], k_sizes[2], 1)
    one_hot = torch.cat([F.one_hot(coords // strides[a] % k_sizes[a], k_sizes[a]) for a, _ in terms], dim=1)
    terms = torch.cat([term for _, term in terms], dim=-1)
    return F.pad(terms, (0, 0, sp, 0)), F.pad(one_hot.to(terms.dtype), (0, 0, sp, 0))


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

    @property
    def _rel_pos_tables(self) -> Tuple[Optional[torch.Tensor], ...]:
        """(rel_pos_t, rel_pos_h, rel_pos_w), axis order of the token grid (T, H, W)."""
        return self.rel_pos_t, self.rel_pos_h, self.rel_pos_w

    def _project_qkv(self, x: torch.Tensor, thw: Grid):
        """x (B, N, dim) -> q, k, v token-major (B, N', heads, head_dim) and the q and k grids."""
        B, N, _ = x.shape
        if not self.pool_first:
            q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).unbind(2)
            q, q_thw = _pool_grid(q, self.pool_q, thw, self.has_cls, self.norm_q)
            k, k_thw = _pool_grid(k, self.pool_k, thw, self.has_cls, self.norm_k)
            v, _ = _pool_grid(v, self.pool_v, thw, self.has_cls, self.norm_v)
            return q, k, v, q_thw, k_thw
        # MViTv1 option: pool the input (folded into heads), then project.
        x = x.view(B, N, self.num_heads, -1)
        q, q_thw = _pool_grid(x, self.pool_q, thw, self.has_cls, self.norm_q)
        k, k_thw = _pool_grid(x, self.pool_k, thw, self.has_cls, self.norm_k)
        v, _ = _pool_grid(x, self.pool_v, thw, self.has_cls, self.norm_v)

        def project(t: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
            return linear(t.flatten(2)).unflatten(-1, (self.num_heads, self.head_dim))

        return project(q, self.q), project(k, self.k), project(v, self.v), q_thw, k_thw

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_thw: Grid, k_thw: Grid) -> torch.Tensor:
        """softmax(q k^T * scale + rel-pos bias) v for (B, heads, N, C) tensors (class token first if any).

        Returns (B, heads, Nq, C); from SDPA on CPU a transposed view of a token-major (B, Nq, heads, C) tensor.
        """
        tables = self._rel_pos_tables
        if self.attn_impl != "explicit":
            if all(t is None for t in tables):
                return F.scaled_dot_product_attention(q, k, v)
            needs_grad = torch.is_grad_enabled() and (
                q.requires_grad or k.requires_grad or any(t is not None and t.requires_grad for t in tables)
            )
            if not needs_grad:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=self._bias_mask(q, q_thw, k_thw))
            if self.attn_impl == "sdpa" or q.is_cuda or q.shape[-2] * k.shape[-2] >= _FOLD_MIN_LOGITS:
                return self._sdpa_folded(q, k, v, q_thw, k_thw)
        return self._attend_explicit(q, k, v, q_thw, k_thw)

    def _attend_explicit(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_thw: Grid, k_thw: Grid
    ) -> torch.Tensor:
        """The reference: logits materialised, bias added, softmax, (B, heads, Nq, C)."""
        sp = 1 if self.has_cls else 0
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if any(t is not None for t in self._rel_pos_tables):
            bias = decomposed_rel_pos_bias(q[:, :, sp:], q_thw, k_thw, self.rel_pos_h, self.rel_pos_w, self.rel_pos_t)
            if sp:
                attn[:, :, sp:, sp:] += bias
            else:
                attn = attn + bias
        return attn.softmax(dim=-1) @ v

    def _bias_mask(self, q: torch.Tensor, q_thw: Grid, k_thw: Grid) -> torch.Tensor:
        """The rel-pos bias as a float mask (B, heads, Nq, Nk) for SDPA, zero in the class token's row and column:
        one matmul (:func:`_bias_matmul_operands`)."""
        terms, one_hot = _bias_matmul_operands(q, q_thw, k_thw, self._rel_pos_tables, int(self.has_cls))
        return terms @ one_hot.t()

    def _sdpa_folded(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_thw: Grid, k_thw: Grid) -> torch.Tensor:
        """SDPA with the decomposed bias folded exactly into the matmul, no mask (so SDPA's fused kernels, with
        their backward, stay usable when the bias needs a gradient).

        q . R_h[h, h'] + q . R_w[w, w'] (+ t) = [q, q.R_h/scale, q.R_w/scale] . [k, onehot(h'), onehot(w')] * scale:
        q gets E = kh + kw (+ kt) columns, k the matching one-hot columns, v zeros (SDPA needs one head size).
        """
        B, heads, _, C = q.shape
        terms, one_hot = _bias_matmul_operands(
            q, q_thw, k_thw, self._rel_pos_tables, int(self.has_cls), multiplier=1.0 / self.scale
        )
        width = terms.shape[-1]
        # FlashAttention on GPUs wants a head size that is a multiple of 8.
        pad = (-(C + width)) % 8 if q.is_cuda else 0
        q = torch.cat((q, F.pad(terms, (0, pad))), dim=-1)
        k = torch.cat((k, F.pad(one_hot, (0, pad)).expand(B, heads, -1, -1)), dim=-1)
        v = F.pad(v, (0, width + pad))
        return F.scaled_dot_product_attention(q, k, v, scale=self.scale)[..., :C]

    def _attend_windows(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_thw: Grid, k_thw: Grid):
        """Attention inside non-overlapping windows; token-major (B, N, heads, C) in and out."""
        B, _, heads, C = q.shape
        q_win, q_windows = _window_partition(q.reshape(B, -1, heads * C), q_thw, self.q_window)
        k_win, kv_windows = _window_partition(k.reshape(B, -1, heads * C), k_thw, self.kv_window)
        v_win, _ = _window_partition(v.reshape(B, -1, heads * C), k_thw, self.kv_window)
        if q_windows != kv_windows:
            raise ValueError(
                f"window attention: query grid {q_thw} and key grid {k_thw} give {q_windows} and "
                f"{kv_windows} windows of {self.q_window} / {self.kv_window}; use an input size whose "
                "token grid is divisible consistently"
            )

        def heads_first(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (heads, C)).transpose(1, 2)

        q_grid, kv_grid = (self.q_window, self.q_window), (self.kv_window, self.kv_window)
        out = self._attend(heads_first(q_win), heads_first(k_win), heads_first(v_win), q_grid, kv_grid)
        out = out.transpose(1, 2).reshape(-1, self.q_window**2, heads * C)
        return _window_unpartition(out, q_windows, self.q_window, q_thw).unflatten(-1, (heads, C))

    def forward(self, x: torch.Tensor, thw: Grid) -> Tuple[torch.Tensor, Grid]:
        B = x.shape[0]
        q, k, v, q_thw, k_thw = self._project_qkv(x, thw)
        if self.window_size:
            out = self._attend_windows(q, k, v, q_thw, k_thw)
        else:
            out = self._attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), q_thw, k_thw).transpose(1, 2)
        # out and q are token-major (B, N, heads, C): the heads merge back into channels with a view.
        if self.residual_pooling:
            if self.has_cls and not self.residual_pooling_cls:
                out = torch.cat((out[:, :1], out[:, 1:] + q[:, 1:]), dim=1)
            else:
                out = out + q
        return self.proj(out.reshape(B, -1, self.dim_out)), q_thw


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
