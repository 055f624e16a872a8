"""Decomposed relative position embeddings of MViTv2: indices, table resizing, the bias and its matmul form.

A block holds one table per axis, ``rel_pos_t`` / ``rel_pos_h`` / ``rel_pos_w`` of shape (L, C), indexed by
the distance of a query and a key along that axis. The bias of the attention logits is

    bias[b, n, (t, h, w), (t', h', w')] = q[b, n, (t, h, w)] . (R_t[t, t'] + R_h[h, h'] + R_w[w, w'])

computed from small per-axis terms ``q . R_axis`` (:func:`rel_pos_terms`), either by a broadcast add (the
definition, :func:`decomposed_rel_pos_bias`) or as one matmul ``terms @ onehot(k)^T``
(:func:`bias_matmul_operands`), which also folds into SDPA's own matmul.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["bias_matmul_operands", "decomposed_rel_pos_bias", "rel_pos_index", "rel_pos_terms", "resize_rel_pos"]

Grid = Tuple[int, ...]


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
    """Linearly interpolate a (L, C) relative-position table to (length, C); identity when L == length.

    The one implementation: run-time inputs of another size and checkpoints loaded with ``strict=False``
    (``mvit.checkpoint``) both resize through it.
    """
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.t().unsqueeze(0), size=length, mode="linear")
    return resized.squeeze(0).t()


def grid3(thw: Grid) -> Tuple[int, int, int]:
    """(H, W) -> (1, H, W); (T, H, W) unchanged."""
    return (1,) * (3 - len(thw)) + tuple(thw)


def rel_pos_terms(
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
    q_sizes, k_sizes = grid3(q_thw), grid3(k_thw)
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
    q_sizes, k_sizes = grid3(q_thw), grid3(k_thw)
    bias = q.new_zeros(())
    for axis, term in rel_pos_terms(q, q_thw, k_thw, (rel_pos_t, rel_pos_h, rel_pos_w)):
        shape = [B, heads, *q_sizes, 1, 1, 1]
        shape[5 + axis] = k_sizes[axis]
        bias = bias + term.view(shape)  # contiguous terms: the sum is laid out contiguously too
    return bias.expand(B, heads, *q_sizes, *k_sizes).reshape(B, heads, n_q, math.prod(k_sizes))


def bias_matmul_operands(
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
    terms = rel_pos_terms(q[:, :, sp:], q_thw, k_thw, tables, multiplier)
    k_sizes = grid3(k_thw)
    coords = torch.arange(math.prod(k_sizes), device=q.device)
    strides = (k_sizes[1] * k_sizes[2], k_sizes[2], 1)
    one_hot = torch.cat([F.one_hot(coords // strides[a] % k_sizes[a], k_sizes[a]) for a, _ in terms], dim=1)
    terms = torch.cat([term for _, term in terms], dim=-1)
    return F.pad(terms, (0, 0, sp, 0)), F.pad(one_hot.to(terms.dtype), (0, 0, sp, 0))
