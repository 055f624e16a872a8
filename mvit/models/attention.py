"""Multi-scale pooling attention with decomposed relative position embeddings, for 2-D and 3-D inputs.

Token pooling lives in :mod:`.pooling`, the relative-position math in :mod:`.rel_pos`, the transformer block in
:mod:`.block`; this module holds the attention: projections, the three kernels and window attention.

Layouts. The public helpers of :mod:`.pooling` and :mod:`.rel_pos` take ``(B, heads, N, C)`` tensors, where ``N = [1 +] prod(thw)`` (the class token, when
present, is the first token and is kept aside while pooling) and ``thw`` is the token grid ``(H, W)`` or
``(T, H, W)``. Inside :class:`MultiScaleAttention` tokens stay token-major, ``(B, N, heads, C)`` in memory, from
the qkv projection to the output projection: a token grid is a channels-last image, pooling outputs reshape into
tokens with views, ``scaled_dot_product_attention`` reads transposed views and writes its output token-major, so
the heads merge back into channels with a view.

Attention kernels (``attn_impl``):

- ``"explicit"``: ``softmax(q k^T * scale + bias) v``, the reference (and the one that can expose attention maps).
- ``"sdpa"``: ``F.scaled_dot_product_attention``. The decomposed bias is ``terms @ onehot(k)^T``, where ``terms``
  (B, heads, Nq, kt + kh + kw) are the small per-axis products q . R_axis and ``onehot(k)`` the keys' grid
  coordinates. Without gradients on the CPU that product is built once, by a matmul, as SDPA's float mask. With
  gradients (a mask that requires grad sends SDPA to its slow math path), and on CUDA always (a float mask rules out
  flash attention and costs a (B, heads, Nq, Nk) tensor), it is folded into SDPA's own matmul instead:
  ``[q, terms / scale] . [k, onehot(k)]`` with v zero-padded, and SDPA runs without a mask. Both are exact.
  (The explicit path keeps the broadcast add of :func:`.rel_pos.decomposed_rel_pos_bias`: it is the definition, and
  FLOP counters such as fvcore count it as the papers do.)
- ``"auto"`` (default): ``"sdpa"``, except for training on CPU with small attention matrices, where the explicit
  path is faster (see ``_FOLD_MIN_LOGITS``).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import BlockSpec
from .pooling import make_pool, pool_grid
from .rel_pos import bias_matmul_operands, decomposed_rel_pos_bias

__all__ = ["MultiScaleAttention"]

Grid = Tuple[int, ...]

# With gradients, "auto" folds the bias into SDPA for attention matrices of at least this many logits per head
# and uses the explicit path below it: on CPU (fp32, batch 8) the fold takes 0.74-0.83x the time of the explicit
# path at 784x784 and 3136x196 logits, 1.1-1.3x at 196x784 and smaller (SDPA's fixed cost and wider matmuls).
_FOLD_MIN_LOGITS = 2**18


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

    Shapes: x (B, N, spec.dim) on grid ``thw`` -> (B, N', spec.attn_dim) on the pooled grid.
    """

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        dim, dim_out = spec.dim, spec.attn_dim
        ndim = len(spec.input_size)
        self.num_heads = spec.num_heads
        self.dim_out = dim_out
        self.head_dim = dim_out // spec.num_heads
        self.scale = self.head_dim**-0.5
        self.has_cls = spec.has_cls
        self.pool_first = spec.pool_first
        self.residual_pooling = spec.residual_pooling
        self.residual_pooling_cls = spec.residual_pooling_cls
        self.window_size = spec.window_size
        # Mutable after construction (MViT.set_attn_impl), so an attribute rather than read from the spec.
        self.attn_impl = spec.attn_impl
        stride_q = spec.stride_q or (1,) * ndim
        stride_kv = spec.stride_kv or (1,) * ndim
        if self.window_size:
            self.q_window = self.window_size // stride_q[-1]
            self.kv_window = self.window_size // stride_kv[-1]

        if spec.pool_first:
            self.q = nn.Linear(dim, dim_out, bias=spec.qkv_bias)
            self.k = nn.Linear(dim, dim_out, bias=spec.qkv_bias)
            self.v = nn.Linear(dim, dim_out, bias=spec.qkv_bias)
        else:
            self.qkv = nn.Linear(dim, dim_out * 3, bias=spec.qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)

        pool_dim = (dim if spec.pool_first else dim_out) // spec.num_heads
        mode, eps = spec.mode, spec.norm_eps
        self.pool_q, self.norm_q = make_pool(mode, spec.kernel_q, spec.stride_q, pool_dim, ndim, eps)
        self.pool_k, self.norm_k = make_pool(mode, spec.kernel_kv, spec.stride_kv, pool_dim, ndim, eps)
        self.pool_v, self.norm_v = make_pool(mode, spec.kernel_kv, spec.stride_kv, pool_dim, ndim, eps)

        self.rel_pos_h = self.rel_pos_w = self.rel_pos_t = None
        if spec.rel_pos_spatial:
            # Table length as in the official code, from the block's input grid and strides; other input
            # sizes interpolate it at run time.
            sizes = []
            for axis in (-2, -1):
                size = spec.input_size[axis]
                sizes.append(2 * max(size // stride_q[axis], size // stride_kv[axis]) - 1)
            self.rel_pos_h = nn.Parameter(torch.zeros(sizes[0], self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(sizes[1], self.head_dim))
        if spec.rel_pos_temporal:
            self.rel_pos_t = nn.Parameter(torch.zeros(2 * spec.input_size[0] - 1, self.head_dim))
        if not spec.rel_pos_zero_init:
            for table in (self.rel_pos_h, self.rel_pos_w, self.rel_pos_t):
                if table is not None:
                    nn.init.trunc_normal_(table, std=0.02)

    @property
    def _rel_pos_tables(self) -> Tuple[Optional[torch.Tensor], ...]:
        """(rel_pos_t, rel_pos_h, rel_pos_w), axis order of the token grid (T, H, W)."""
        return self.rel_pos_t, self.rel_pos_h, self.rel_pos_w

    def _project_qkv(self, x: torch.Tensor, thw: Grid):
        """x (B, N, dim) -> q, k, v token-major (B, N', heads, head_dim) and the q and k grids."""
        B, N, _ = x.shape
        if not self.pool_first:
            q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).unbind(2)
            q, q_thw = pool_grid(q, self.pool_q, thw, self.has_cls, self.norm_q)
            k, k_thw = pool_grid(k, self.pool_k, thw, self.has_cls, self.norm_k)
            v, _ = pool_grid(v, self.pool_v, thw, self.has_cls, self.norm_v)
            return q, k, v, q_thw, k_thw
        # MViTv1 option: pool the input (folded into heads), then project.
        x = x.view(B, N, self.num_heads, -1)
        q, q_thw = pool_grid(x, self.pool_q, thw, self.has_cls, self.norm_q)
        k, k_thw = pool_grid(x, self.pool_k, thw, self.has_cls, self.norm_k)
        v, _ = pool_grid(x, self.pool_v, thw, self.has_cls, self.norm_v)

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
            # Inference on CPU keeps the mask (the fold was not consistently faster there, 2 cores); on CUDA a
            # float mask rules out flash attention and costs B*heads*Nq*Nk memory (twice, padded, in mem-efficient).
            if not needs_grad and not q.is_cuda:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=self._bias_mask(q, q_thw, k_thw))
            if self.attn_impl == "sdpa" or q.is_cuda or q.shape[-2] * k.shape[-2] >= _FOLD_MIN_LOGITS:
                return self._sdpa_folded(q, k, v, q_thw, k_thw)
        return self._attend_explicit(q, k, v, q_thw, k_thw)

    def _attend_explicit(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_thw: Grid, k_thw: Grid
    ) -> torch.Tensor:
        """The reference: logits materialised, bias added, softmax, (B, heads, Nq, C)."""
        return self.attention_probs(q, k, q_thw, k_thw) @ v

    def attention_probs(self, q: torch.Tensor, k: torch.Tensor, q_thw: Grid, k_thw: Grid) -> torch.Tensor:
        """softmax(q k^T * scale + rel-pos bias): (B, heads, Nq, Nk), class token first if any (the explicit path's
        attention map, also what :mod:`mvit.explain` records)."""
        sp = 1 if self.has_cls else 0
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if any(t is not None for t in self._rel_pos_tables):
            bias = decomposed_rel_pos_bias(q[:, :, sp:], q_thw, k_thw, self.rel_pos_h, self.rel_pos_w, self.rel_pos_t)
            if sp:
                attn[:, :, sp:, sp:] += bias
            else:
                attn = attn + bias
        return attn.softmax(dim=-1)

    def _bias_mask(self, q: torch.Tensor, q_thw: Grid, k_thw: Grid) -> torch.Tensor:
        """The rel-pos bias as a float mask (B, heads, Nq, Nk) for SDPA, zero in the class token's row and column:
        one matmul (:func:`bias_matmul_operands`)."""
        terms, one_hot = bias_matmul_operands(q, q_thw, k_thw, self._rel_pos_tables, int(self.has_cls))
        return terms @ one_hot.t()

    def _sdpa_folded(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_thw: Grid, k_thw: Grid) -> torch.Tensor:
        """SDPA with the decomposed bias folded exactly into the matmul, no mask (so SDPA's fused kernels, with
        their backward, stay usable when the bias needs a gradient).

        q . R_h[h, h'] + q . R_w[w, w'] (+ t) = [q, q.R_h/scale, q.R_w/scale] . [k, onehot(h'), onehot(w')] * scale:
        q gets E = kh + kw (+ kt) columns, k the matching one-hot columns, v zeros (SDPA needs one head size).
        """
        B, heads, _, C = q.shape
        terms, one_hot = bias_matmul_operands(
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

    def _attend_tokens(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_thw: Grid, k_thw: Grid):
        """Attention of token-major (B, N, heads, C) q, k, v, in windows or global; token-major out."""
        if self.window_size:
            return self._attend_windows(q, k, v, q_thw, k_thw)
        return self._attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), q_thw, k_thw).transpose(1, 2)

    def forward(self, x: torch.Tensor, thw: Grid) -> Tuple[torch.Tensor, Grid]:
        B = x.shape[0]
        q, k, v, q_thw, k_thw = self._project_qkv(x, thw)
        out = _attend_tokens(self, q, k, v, q_thw, k_thw)
        # out and q are token-major (B, N, heads, C): the heads merge back into channels with a view.
        if self.residual_pooling:
            if self.has_cls and not self.residual_pooling_cls:
                out = torch.cat((out[:, :1], out[:, 1:] + q[:, 1:]), dim=1)
            else:
                out = out + q
        return self.proj(out.reshape(B, -1, self.dim_out)), q_thw


def _attend_tokens(
    attn: MultiScaleAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_thw: Grid, k_thw: Grid
) -> torch.Tensor:
    """``attn._attend_tokens``, as a function that torch.fx records as one call: the kernel is chosen at run time
    (gradients, device, sizes), so a traced graph computes exactly what the module computes."""
    return attn._attend_tokens(q, k, v, q_thw, k_thw)


torch.fx.wrap("_attend_tokens")
