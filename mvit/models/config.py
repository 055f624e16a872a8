"""The model's own config: a small dataclass that is resolved into one spec per block.

:class:`MViTConfig` is the one schema of the architecture: the experiment config's ``MVIT.*`` keys are
derived from its fields (upper case, official names; :mod:`mvit.config.arch` translates), so an official
yaml maps onto it one to one. :meth:`MViTConfig.from_stages` builds the per-block lists from a few numbers
(timm style) for the model zoo.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..errors import ConfigError

__all__ = ["BlockSpec", "MViTConfig", "round_width"]


def round_width(width: float, multiplier: float, divisor: int = 1) -> int:
    """Scale ``width`` by ``multiplier`` and round to a multiple of ``divisor`` (official rounding rule)."""
    if not multiplier:
        return int(width)
    width *= multiplier
    width_out = max(divisor, int(width + divisor / 2) // divisor * divisor)
    if width_out < 0.9 * width:
        width_out += divisor
    return int(width_out)


class UnknownFieldError(ConfigError, TypeError):
    """A keyword that is not an :class:`MViTConfig` field (a TypeError, as for any unknown keyword argument)."""


@dataclass(frozen=True)
class BlockSpec:
    """Everything one :class:`MultiScaleBlock` and its :class:`MultiScaleAttention` need, resolved from
    :class:`MViTConfig` (see its fields for the meaning of the flags; the defaults are its defaults)."""

    dim: int
    dim_out: int
    num_heads: int
    input_size: Tuple[int, ...]  # (H, W) or (T, H, W) of the block input at the build size
    kernel_q: Tuple[int, ...]  # () = no q pooling
    stride_q: Tuple[int, ...]
    kernel_kv: Tuple[int, ...]  # () = no k/v pooling
    stride_kv: Tuple[int, ...]
    drop_path: float = 0.0
    window_size: int = 0  # 0 = global attention
    mlp_ratio: float = 4.0
    dim_mul_in_att: bool = True  # the attention (True) or the MLP (False) changes the width
    norm_eps: float = 1e-6
    qkv_bias: bool = True
    mode: str = "conv"  # pooling: "conv", "max" or "avg"
    pool_first: bool = False
    has_cls: bool = False  # a class token precedes the patch tokens
    rel_pos_spatial: bool = True
    rel_pos_temporal: bool = False
    rel_pos_zero_init: bool = False
    residual_pooling: bool = True
    residual_pooling_cls: bool = False
    attn_impl: str = "auto"  # "auto", "sdpa" or "explicit"

    @property
    def attn_dim(self) -> int:
        """Width of the attention output (and of the MLP's input)."""
        return self.dim_out if self.dim_mul_in_att else self.dim


@dataclass
class MViTConfig:
    """Architecture of an MViTv2 model for images (2-D) or video (3-D).

    The number of dimensions comes from ``input_size``: ``(H, W)`` builds a 2-D model, ``(T, H, W)`` a
    3-D one (``T`` is the number of input frames). Per-block lists use the official format
    ``[[block_index, value, ...], ...]``.
    """

    # (H, W) or (T, H, W) at the build size; other sizes work at run time (interpolated position tables).
    input_size: Tuple[int, ...] = (224, 224)
    in_chans: int = 3
    # 0 = no classifier head (features only).
    num_classes: int = 1000
    # Patch embedding (a strided convolution): 2 entries for images, 3 (T, H, W) for video.
    patch_kernel: Tuple[int, ...] = (7, 7)
    patch_stride: Tuple[int, ...] = (4, 4)
    patch_padding: Tuple[int, ...] = (3, 3)
    embed_dim: int = 96
    num_heads: int = 1
    depth: int = 10
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    # [[block_index, multiplier], ...]: channel / head multiplication at a block.
    dim_mul: Sequence[Sequence[float]] = ()
    head_mul: Sequence[Sequence[float]] = ()
    # [[block_index, s_0, s_1(, s_2)], ...]: q pooling strides per block.
    pool_q_stride: Sequence[Sequence[int]] = ()
    # [[block_index, s_0, s_1(, s_2)], ...]: explicit kv pooling strides per block.
    pool_kv_stride: Sequence[Sequence[int]] = ()
    # Initial kv stride, divided by the q stride of each block that pools q; replaces pool_kv_stride when set.
    pool_kv_stride_adaptive: Optional[Sequence[int]] = None
    # Kernel of the q / k / v pooling; None = 3 in every dimension.
    pool_kvq_kernel: Optional[Sequence[int]] = None
    # Pooling operator of q / k / v: "conv" (depthwise conv + LayerNorm), "max" or "avg".
    mode: str = "conv"
    # Pool before the q / k / v projections (MViTv1 option).
    pool_first: bool = False
    # Prepend a class token; the head then reads it instead of mean-pooling the patch tokens.
    cls_embed_on: bool = False
    # Absolute position embedding after the patch embedding; sep_pos_embed: separate space / time (video).
    use_abs_pos: bool = False
    sep_pos_embed: bool = False
    # Decomposed relative position embeddings.
    rel_pos_spatial: bool = True
    rel_pos_temporal: bool = False
    rel_pos_zero_init: bool = False
    # Residual pooling connection (pooled q added to the attention output).
    residual_pooling: bool = True
    # Legacy behaviour: residual pooling also adds the pooled class token (timm's *_cls weights need it).
    residual_pooling_cls: bool = False
    # Expand channels in the attention (True) or in the MLP (False; used by L and H).
    dim_mul_in_att: bool = True
    # Stochastic depth, linearly increasing from 0 to this rate over the blocks.
    drop_path_rate: float = 0.0
    # Dropout before the final projection of the head.
    head_dropout: float = 0.0
    norm_eps: float = 1e-6
    # Per-block window size for window attention (0 = global); None = global everywhere.
    window_sizes: Optional[Sequence[int]] = None
    # One LayerNorm per stage output of forward_multiscale (detectron2's scale{k}_norm).
    out_norm: bool = False
    # LayerNorm after the last block (used by forward_features and the head).
    final_norm: bool = True
    # Attention kernel: "auto" (fused where supported), "sdpa" or "explicit".
    attn_impl: str = "auto"
    # Activation checkpointing of every block (trades compute for memory).
    act_checkpoint: bool = False

    def __post_init__(self) -> None:
        self.input_size = tuple(int(s) for s in self.input_size)
        n = len(self.input_size)
        # Tuples throughout, so that the same architecture from a yaml, the zoo or Python compares equal.
        for name in ("dim_mul", "head_mul", "pool_q_stride", "pool_kv_stride"):
            setattr(self, name, tuple(tuple(entry) for entry in getattr(self, name)))
        if self.pool_kv_stride_adaptive is not None:
            self.pool_kv_stride_adaptive = tuple(int(s) for s in self.pool_kv_stride_adaptive) or None
        if self.window_sizes is not None:
            self.window_sizes = tuple(int(w) for w in self.window_sizes)
        if n not in (2, 3):
            raise ValueError(f"MViTConfig.input_size must be (H, W) or (T, H, W), got {self.input_size}")
        for name in ("patch_kernel", "patch_stride", "patch_padding"):
            value = tuple(int(v) for v in getattr(self, name))
            if len(value) != n:
                raise ValueError(f"MViTConfig.{name}={value} has {len(value)} entries, input_size has {n}")
            setattr(self, name, value)
        if self.pool_kvq_kernel is None:
            self.pool_kvq_kernel = (3,) * n
        self.pool_kvq_kernel = tuple(int(v) for v in self.pool_kvq_kernel)
        if len(self.pool_kvq_kernel) != n:
            raise ValueError(f"MViTConfig.pool_kvq_kernel={self.pool_kvq_kernel} must have {n} entries")
        if self.mode not in ("conv", "max", "avg"):
            raise ValueError(f"MViTConfig.mode must be 'conv', 'max' or 'avg', got {self.mode!r}")
        if self.attn_impl not in ("auto", "sdpa", "explicit"):
            raise ValueError(f"MViTConfig.attn_impl must be 'auto', 'sdpa' or 'explicit', got {self.attn_impl!r}")
        if self.rel_pos_temporal and n != 3:
            raise ValueError("MViTConfig.rel_pos_temporal needs a 3-D input_size (T, H, W)")
        if self.window_sizes is not None:
            if len(self.window_sizes) != self.depth:
                raise ValueError(f"MViTConfig.window_sizes has {len(self.window_sizes)} entries, depth={self.depth}")
            if any(self.window_sizes) and (n != 2 or self.cls_embed_on or self.pool_first):
                raise ValueError("window attention needs a 2-D model without class token and pool_first")
        for name in ("pool_q_stride", "pool_kv_stride", "dim_mul", "head_mul"):
            for entry in getattr(self, name):
                if not 0 <= int(entry[0]) < self.depth + (1 if name.endswith("mul") else 0):
                    raise ValueError(f"MViTConfig.{name}: block index {entry[0]} out of range (depth={self.depth})")
        for name in ("pool_q_stride", "pool_kv_stride"):
            for entry in getattr(self, name):
                if len(entry) != n + 1:
                    raise ValueError(f"MViTConfig.{name} entry {list(entry)} must be [block, {n} strides]")

    @property
    def ndim(self) -> int:
        """2 for images, 3 for video."""
        return len(self.input_size)

    @property
    def patch_grid(self) -> Tuple[int, ...]:
        """Token grid after the patch embedding at the build size."""
        return tuple(
            (s + 2 * p - k) // st + 1
            for s, k, st, p in zip(self.input_size, self.patch_kernel, self.patch_stride, self.patch_padding)
        )

    def replace(self, **changes) -> MViTConfig:
        """A copy with some fields changed (validated again)."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            hints = [
                f"{u} (did you mean {', '.join(close)}?)" if (close := difflib.get_close_matches(u, names)) else u
                for u in unknown
            ]
            raise UnknownFieldError(f"unknown MViTConfig field(s): {'; '.join(hints)}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_stages(
        cls,
        depths: Sequence[int],
        input_size: Tuple[int, ...] = (224, 224),
        q_stride: Optional[Sequence[int]] = None,
        kv_stride_adaptive: Optional[Sequence[int]] = None,
        **kwargs,
    ) -> MViTConfig:
        """Build the per-block lists from stage depths: channels and heads double and q is pooled by
        ``q_stride`` at the first block of every stage after the first."""
        n = len(input_size)
        q_stride = tuple(q_stride or (2,) * n)
        one = (1,) * n
        starts = list(itertools.accumulate(depths))[:-1]
        kwargs.setdefault("dim_mul", [[s, 2.0] for s in starts])
        kwargs.setdefault("head_mul", [[s, 2.0] for s in starts])
        kwargs.setdefault("pool_q_stride", [[i, *(q_stride if i in starts else one)] for i in range(sum(depths))])
        if kv_stride_adaptive is None:
            kv_stride_adaptive = (4,) * n
        return cls(
            input_size=input_size,
            depth=sum(depths),
            pool_kv_stride_adaptive=tuple(kv_stride_adaptive),
            **kwargs,
        )

    def stage_ends(self) -> List[int]:
        """Index of the last block of each stage (a stage ends before a block that pools q spatially)."""
        specs = self.block_specs()
        ends = [i - 1 for i, s in enumerate(specs) if i > 0 and s.stride_q and math.prod(s.stride_q[-2:]) > 1]
        return ends + [self.depth - 1]

    def block_specs(self) -> List[BlockSpec]:
        """Resolve the per-block lists into one :class:`BlockSpec` per block (official semantics)."""
        depth, n = self.depth, self.ndim
        dim_mul = [1.0] * (depth + 1)
        head_mul = [1.0] * (depth + 1)
        for index, mul in self.dim_mul:
            dim_mul[int(index)] = float(mul)
        for index, mul in self.head_mul:
            head_mul[int(index)] = float(mul)

        stride_q: List[Tuple[int, ...]] = [()] * depth
        kernel_q: List[Tuple[int, ...]] = [()] * depth
        for index, *strides in self.pool_q_stride:
            stride_q[int(index)] = tuple(int(s) for s in strides)
            kernel_q[int(index)] = self.pool_kvq_kernel

        stride_kv: List[Tuple[int, ...]] = [()] * depth
        kernel_kv: List[Tuple[int, ...]] = [()] * depth
        kv_list = list(self.pool_kv_stride)
        if self.pool_kv_stride_adaptive:
            # The adaptive kv stride is divided by the q stride in the same block that pools q: the
            # official behaviour (SlowFast issue 669) that released weights were trained with.
            current = [int(s) for s in self.pool_kv_stride_adaptive]
            kv_list = []
            for i in range(depth):
                if stride_q[i]:
                    current = [max(current[d] // stride_q[i][d], 1) for d in range(n)]
                kv_list.append([i, *current])
        for index, *strides in kv_list:
            stride_kv[int(index)] = tuple(int(s) for s in strides)
            kernel_kv[int(index)] = self.pool_kvq_kernel

        drop_path = [self.drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        windows = list(self.window_sizes) if self.window_sizes is not None else [0] * depth

        specs = []
        dim, num_heads = self.embed_dim, self.num_heads
        size = self.patch_grid
        for i in range(depth):
            num_heads = round_width(num_heads, head_mul[i])
            if self.dim_mul_in_att:
                dim_out = round_width(dim, dim_mul[i], divisor=round_width(num_heads, head_mul[i]))
            else:
                dim_out = round_width(dim, dim_mul[i + 1], divisor=round_width(num_heads, head_mul[i + 1]))
            kq, sq = kernel_q[i], stride_q[i]
            kkv, skv = kernel_kv[i], stride_kv[i]
            # Pooling with a 1x1 kernel and stride 1 is the identity: skip it (official rule).
            if kq and math.prod(kq) == 1 and math.prod(sq) == 1:
                kq, sq = (), ()
            if kkv and math.prod(kkv) == 1 and math.prod(skv) == 1:
                kkv, skv = (), ()
            specs.append(
                BlockSpec(
                    dim=dim,
                    dim_out=dim_out,
                    num_heads=num_heads,
                    input_size=tuple(size),
                    kernel_q=kq,
                    stride_q=sq,
                    kernel_kv=kkv,
                    stride_kv=skv,
                    drop_path=drop_path[i],
                    window_size=int(windows[i]),
                    mlp_ratio=self.mlp_ratio,
                    dim_mul_in_att=self.dim_mul_in_att,
                    norm_eps=self.norm_eps,
                    qkv_bias=self.qkv_bias,
                    mode=self.mode,
                    pool_first=self.pool_first,
                    has_cls=self.cls_embed_on,
                    rel_pos_spatial=self.rel_pos_spatial,
                    rel_pos_temporal=self.rel_pos_temporal,
                    rel_pos_zero_init=self.rel_pos_zero_init,
                    residual_pooling=self.residual_pooling,
                    residual_pooling_cls=self.residual_pooling_cls,
                    attn_impl=self.attn_impl,
                )
            )
            if stride_q[i]:
                size = tuple(s // st for s, st in zip(size, stride_q[i]))
            dim = dim_out
        return specs
