"""See inside a pooling-attention model: Grad-CAM on a stage's map and attention rollout mapped to the input grid.

Both work for images (B, C, H, W) and clips (B, C, T, H, W), with or without a class token, and return an
:class:`Explanation`: the map on the model's token grid and the same map resized to the input.

Grad-CAM (Selvaraju et al., 2017) weighs the channels of one stage's patch-token map by the spatially averaged
gradient of the target logit and keeps the positive part. A model that classifies from its class token
(``global_pool == "token"``) reads nothing from the patch tokens of the last block's *output*, so for the last
stage the map is taken at the last block's input (the output of the block before it), the last place where patch
tokens still feed the class token (as Grad-CAM for ViTs does).

Attention rollout (Abnar & Zuidema, 2020), extended to pooling attention. Every block ``b`` maps its input tokens
(class token ``c`` and the patch grid ``G_in``) to its output tokens (``c`` and the q-pooled grid ``G_q``)::

    out = skip(x) + attention(x),   attention_j = sum_k A[j, k] v_k  (+ q_j with residual pooling)

where ``A`` is (c + |G_q|) x (c + |G_kv|) (softmax rows, heads fused by their mean), ``v`` the kv-pooled tokens
and ``q`` the q-pooled ones. The rollout replaces each term by a row-stochastic matrix over the *input* tokens:

- ``P_kv`` (c + |G_kv|) x (c + |G_in|): a kv-pooled token maps onto the input tokens of its pooling window
  (the pooling convolution's receptive field: kernel, stride and padding of ``attn.pool_k``), with
  ``mapping="average"`` uniformly over the window positions inside the grid (zero padding carries nothing), with
  ``mapping="nearest"`` entirely onto the window's centre (clamped into the grid). Pooling is separable, so
  ``P_kv`` is the Kronecker product of one such matrix per axis (T, H, W), applied axis by axis.
- ``P_q`` the same for the q pooling (``attn.pool_q``), and ``P_skip`` for the skip connection's max pooling
  (``block.pool_skip``; its data-dependent argmax is not modelled: its window is mapped like the others).
  Without pooling each is the identity.
- The class token is its own row and column in all of them: it is never pooled, it maps onto itself.

The block matrix is ``M_b = 1/2 P_skip + 1/2 (D_a A P_kv + D_q P_q)``, with ``D_q = 1/2`` on the rows that get
the pooled q added (all rows with residual pooling; not the class token's unless ``residual_pooling_cls``),
``D_a = 1 - D_q``, and ``D_q = 0`` without residual pooling. The 1/2 on the skip is the rollout's identity term
(0.5 A + 0.5 I). Every factor is row-stochastic, so ``M_b`` is, and the relevance of one output sums to 1 at every
depth. The rollout of the model is ``R = M_L ... M_1`` (rows: last block's tokens, columns: patch-embedding
tokens); the explained output is the class token's row (class-token models), or the mean of the patch-token rows
(average-pooled models, as the head reads them). The rollout is computed backwards as that row times the block
matrices, never forming ``R`` (3-D grids are large). The class token's own share (the relevance that ends on the
learned class-token embedding, not on a pixel) is returned as ``cls_share`` and left out of the map.

Consequences, tested in ``tests/explain``: identity attention without pooling gives ``R = I`` (each token
explains itself; an average-pooled model's map is then uniform); the backward computation equals the product of
the dense matrices built independently by average pooling of one-hot maps.

The patch-grid map is resized to the input by bilinear (trilinear for clips) interpolation, ``align_corners=False``:
token ``i`` of an axis with patch stride ``s`` is centred on input position ``s * i + (s - 1) / 2``, which is what
this interpolation assumes when the input is ``s`` times the grid.

Window attention (detectron2 backbones with ``window_sizes``) is not supported by the rollout.
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Explanation",
    "attention_rollout",
    "capture_attention",
    "grad_cam",
    "pooling_matrix",
    "resize_to_input",
    "rollout",
]

Grid = Tuple[int, ...]


@dataclass
class Explanation:
    """One explanation of a batch.

    Attributes:
        heatmap: (B, [T,] H, W) the map resized to the input, scaled to [0, 1] per sample.
        grid_map: (B, [t,] h, w) the raw map on its token grid (Grad-CAM: the stage's grid; rollout: the patch grid).
        logits: (B, K) the model's output.
        target: (B,) the explained class of each sample (Grad-CAM), or the argmax (rollout explains the pooled token,
            which does not depend on a class).
        cls_share: (B,) rollout only: the relevance left on the class token's embedding (0 without a class token).
    """

    heatmap: torch.Tensor
    grid_map: torch.Tensor
    logits: torch.Tensor
    target: torch.Tensor
    cls_share: Optional[torch.Tensor] = None


def resize_to_input(grid_map: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, *grid) -> (B, *size) by bilinear / trilinear interpolation (``align_corners=False``), scaled to [0, 1]
    per sample (a constant map becomes ones, or zeros where it is zero everywhere: it has no peak)."""
    mode = "bilinear" if grid_map.ndim == 3 else "trilinear"
    out = F.interpolate(grid_map[:, None].float(), size=tuple(size), mode=mode, align_corners=False)[:, 0]
    flat = out.flatten(1)
    low = flat.min(dim=1).values
    span = flat.max(dim=1).values - low
    const = span <= 1e-12 * flat.abs().max(dim=1).values.clamp_min(1e-30)
    scaled = (flat - low[:, None]) / torch.where(const, torch.ones_like(span), span)[:, None]
    scaled[const] = (flat[const] != 0).float()
    return scaled.view_as(out)


def _stage_block(model: nn.Module, stage: int) -> int:
    """Index of the block whose output Grad-CAM reads for ``stage`` (see the module docstring)."""
    ends = list(model.stage_ends)
    if not -len(ends) <= stage < len(ends):
        raise ValueError(f"grad_cam: stage {stage} out of range for a model of {len(ends)} stages")
    index = ends[stage]
    if getattr(model, "global_pool", "avg") == "token" and index == len(model.blocks) - 1:
        if index == 0:
            raise ValueError("grad_cam: a one-block class-token model has no patch map that feeds the class token")
        index -= 1
    return index


def grad_cam(
    model: nn.Module, x: torch.Tensor, target: Union[int, torch.Tensor, None] = None, stage: int = -1
) -> Explanation:
    """Grad-CAM of ``target`` (a class index, one per sample, or the top class when None) on a stage's map.

    Args:
        model: an :class:`mvit.models.MViT` (used in eval mode; its parameters need not require gradients).
        x: (B, C, H, W) or (B, C, T, H, W), normalised as the model expects.
        stage: which stage's map (0 .. num_stages - 1, negative from the end); see the module docstring for the
            last stage of a class-token model.
    """
    index = _stage_block(model, stage)
    cls = int(model.cls_embed_on)
    taken: Dict[str, object] = {}

    def keep(_module, _args, output):
        taken["tokens"], taken["grid"] = output

    handle = model.blocks[index].register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)  # a graph even when the parameters are frozen
            logits = model(x)
            tgt = _targets(logits, target)
            score = logits.gather(1, tgt[:, None]).sum()
            tokens = taken["tokens"]
            (grads,) = torch.autograd.grad(score, tokens)
    finally:
        handle.remove()
    patches, grads = tokens.detach()[:, cls:].float(), grads[:, cls:].float()
    weights = grads.mean(dim=1, keepdim=True)  # (B, 1, C): the channel weights, gradients averaged over the grid
    cam = (patches * weights).sum(dim=-1).relu()
    grid_map = cam.reshape(cam.shape[0], *taken["grid"])
    return Explanation(resize_to_input(grid_map, x.shape[2:]), grid_map, logits.detach(), tgt)


def _targets(logits: torch.Tensor, target: Union[int, torch.Tensor, None]) -> torch.Tensor:
    if target is None:
        return logits.argmax(dim=1)
    tgt = torch.as_tensor(target, device=logits.device).long().reshape(-1).expand(logits.shape[0])
    if (tgt < 0).any() or (tgt >= logits.shape[1]).any():
        raise ValueError(f"target class {target} out of range for {logits.shape[1]} classes")
    return tgt


# ---------------------------------------------------------------------------------------------------- rollout
def _recording_attend_explicit(self, q, k, v, q_thw, k_thw, *, record: dict):
    """``MultiScaleAttention._attend_explicit`` that also keeps the attention probabilities (the same function,
    so the model's output is unchanged bit for bit: tests/explain checks it)."""
    probs = self.attention_probs(q, k, q_thw, k_thw)
    record.update(probs=probs.detach(), q_thw=tuple(q_thw), k_thw=tuple(k_thw))
    return probs @ v


@contextlib.contextmanager
def capture_attention(model: nn.Module) -> Iterator[List[dict]]:
    """Record every block's attention probabilities during the forward passes inside the ``with`` block.

    Yields a list that gets one dict per block run: ``probs`` (B, heads, c + Nq, c + Nk), ``in_thw`` (the block's
    input grid), ``q_thw`` and ``k_thw`` (the q- and kv-pooled grids). Attention runs on the "explicit" kernel
    meanwhile (the one that forms the probabilities); the kernels are restored afterwards.
    """
    records: List[dict] = []
    saved, handles = [], []
    try:
        for blk in model.blocks:
            attn = blk.attn
            if attn.window_size:
                raise ValueError("attention rollout does not support window attention (window_sizes)")
            saved.append((attn, attn.attn_impl))

            def pre_hook(_module, args, attn=attn):
                record = {"in_thw": tuple(args[1])}
                records.append(record)
                attn._attend_explicit = types.MethodType(
                    lambda self, *a: _recording_attend_explicit(self, *a, record=record), attn
                )

            handles.append(blk.register_forward_pre_hook(pre_hook))
            attn.attn_impl = "explicit"
        yield records
    finally:
        for handle in handles:
            handle.remove()
        for attn, impl in saved:
            attn.attn_impl = impl
            attn.__dict__.pop("_attend_explicit", None)


def _pool_geometry(pool: Optional[nn.Module], ndim: int) -> Optional[Tuple[Grid, Grid, Grid]]:
    """(kernel, stride, padding) per axis of a pooling module (convolution, max or average pooling)."""
    if pool is None:
        return None

    def per_axis(v) -> Grid:
        return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * ndim

    return per_axis(pool.kernel_size), per_axis(pool.stride), per_axis(pool.padding)


def pooling_matrix(n_in: int, kernel: int, stride: int, padding: int, mapping: str = "average") -> torch.Tensor:
    """(n_out, n_in) row-stochastic map of one axis of a pooling: row ``o`` spreads over the window
    ``[o * stride - padding, o * stride - padding + kernel)`` inside ``[0, n_in)`` ("average": uniformly;
    "nearest": all on the window's centre, clamped into the axis)."""
    if mapping not in ("average", "nearest"):
        raise ValueError(f"mapping must be 'average' or 'nearest', got {mapping!r}")
    n_out = (n_in + 2 * padding - kernel) // stride + 1
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        lo = o * stride - padding
        if mapping == "nearest":
            m[o, min(max(lo + kernel // 2, 0), n_in - 1)] = 1.0
            continue
        inside = [i for i in range(lo, lo + kernel) if 0 <= i < n_in]
        m[o, inside] = 1.0 / len(inside)
    return m


def _axis_matrices(
    pool: Optional[nn.Module], in_thw: Grid, out_thw: Grid, mapping: str, what: str
) -> Optional[List[torch.Tensor]]:
    geometry = _pool_geometry(pool, len(in_thw))
    if geometry is None:
        if tuple(in_thw) != tuple(out_thw):
            raise RuntimeError(f"rollout: {what} changes the grid {in_thw} -> {out_thw} without a pooling module")
        return None
    mats = [pooling_matrix(n, k, s, p, mapping) for n, k, s, p in zip(in_thw, *geometry)]
    got = tuple(m.shape[0] for m in mats)
    if got != tuple(out_thw):  # the geometry must reproduce the grid the model computed, exactly
        raise RuntimeError(f"rollout: {what} geometry gives grid {got}, the model computed {tuple(out_thw)}")
    return mats


def _pull(r: torch.Tensor, mats: Optional[List[torch.Tensor]], cls: int) -> torch.Tensor:
    """Relevance on pooled tokens (B, K, c + prod(out)) -> on the input tokens (B, K, c + prod(in)): ``r @ P``."""
    if mats is None:
        return r
    B, K = r.shape[:2]
    out_grid = [m.shape[0] for m in mats]
    patches = r[..., cls:].reshape(B, K, *out_grid)
    for axis, m in enumerate(mats):
        patches = torch.movedim(torch.movedim(patches, 2 + axis, -1) @ m.to(r.dtype), -1, 2 + axis)
    return torch.cat((r[..., :cls], patches.reshape(B, K, -1)), dim=-1)


def _fuse_heads(probs: torch.Tensor, head_fusion: str) -> torch.Tensor:
    if head_fusion == "mean":
        return probs.mean(dim=1)
    if head_fusion == "max":  # rows renormalised so that the block matrix stays row-stochastic
        fused = probs.amax(dim=1)
        return fused / fused.sum(dim=-1, keepdim=True)
    raise ValueError(f"head_fusion must be 'mean' or 'max', got {head_fusion!r}")


def rollout(
    model: nn.Module,
    records: Sequence[dict],
    start: torch.Tensor,
    mapping: str = "average",
    head_fusion: str = "mean",
) -> torch.Tensor:
    """Roll relevance on the last block's tokens back to the patch-embedding tokens: ``start @ M_L ... M_1``.

    Args:
        records: one per block, from :func:`capture_attention`.
        start: (B, K, c + N_L) rows on the last block's output tokens (an identity gives the whole matrix ``R``).

    Returns:
        (B, K, c + N_0) in float64, class token first when the model has one.
    """
    if len(records) != len(model.blocks):
        raise ValueError(f"rollout: {len(records)} attention records for {len(model.blocks)} blocks")
    cls = int(model.cls_embed_on)
    r = start.double()
    for blk, rec in zip(reversed(model.blocks), reversed(records)):
        attn, in_thw, q_thw, k_thw = blk.attn, rec["in_thw"], rec["q_thw"], rec["k_thw"]
        skip = _axis_matrices(blk.pool_skip, in_thw, q_thw, mapping, "the skip pooling")
        pool_q = _axis_matrices(attn.pool_q, in_thw, q_thw, mapping, "the q pooling")
        pool_kv = _axis_matrices(attn.pool_k, in_thw, k_thw, mapping, "the kv pooling")
        A = _fuse_heads(rec["probs"].double(), head_fusion)
        # Per output row: the share of the attention path that comes from the pooled q (residual pooling).
        res = torch.full((r.shape[-1],), 0.5 if attn.residual_pooling else 0.0, dtype=r.dtype, device=r.device)
        if cls and not attn.residual_pooling_cls:
            res[0] = 0.0
        through_attn = _pull(torch.matmul(r * (1 - res), A), pool_kv, cls) + _pull(r * res, pool_q, cls)
        r = 0.5 * _pull(r, skip, cls) + 0.5 * through_attn
    return r


def attention_rollout(
    model: nn.Module, x: torch.Tensor, mapping: str = "average", head_fusion: str = "mean"
) -> Explanation:
    """Attention rollout of the token the head reads (the class token, or the mean of the patch tokens) onto the
    patch grid, resized to the input (see the module docstring)."""
    with torch.no_grad(), capture_attention(model) as records:
        logits = model(x)
    cls = int(model.cls_embed_on)
    last = records[-1]
    n_last = cls + int(torch.tensor(last["q_thw"]).prod())
    start = torch.zeros(x.shape[0], 1, n_last, dtype=torch.float64, device=x.device)
    if getattr(model, "global_pool", "avg") == "token":
        start[..., 0] = 1.0
    else:
        start[..., cls:] = 1.0 / (n_last - cls)
    r = rollout(model, records, start, mapping, head_fusion)[:, 0]
    grid_map = r[:, cls:].reshape(x.shape[0], *records[0]["in_thw"]).float()
    cls_share = r[:, 0].float() if cls else torch.zeros(x.shape[0])
    return Explanation(resize_to_input(grid_map, x.shape[2:]), grid_map, logits, logits.argmax(dim=1), cls_share)
