"""MViTv2: one model for images (B, 3, H, W) and video (B, 3, T, H, W).

Improved Multiscale Vision Transformers for Classification and Detection (Li et al., CVPR 2022).
Parameter names follow the official release (``patch_embed.proj``, ``blocks.{i}.attn.qkv``, ``head.projection``
...), so official and PySlowFast checkpoints load without renaming; ``mvit.checkpoint`` converts the others.
"""

from __future__ import annotations

from typing import Dict, List, Set, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as grad_checkpoint

from .attention import MultiScaleBlock
from .config import MViTConfig
from .layers import ClassifierHead, PatchEmbed

__all__ = ["MViT"]


class MViT(nn.Module):
    """Multiscale Vision Transformer v2.

    Args:
        cfg: architecture; ``len(cfg.input_size)`` (2 or 3) selects images or video.

    Inputs other than the build size ``cfg.input_size`` work: relative position tables (and absolute position
    embeddings) are interpolated at run time; at the build size nothing is interpolated.
    """

    def __init__(self, cfg: MViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ndim = cfg.ndim
        self.in_chans = cfg.in_chans
        self.num_classes = cfg.num_classes
        self.cls_embed_on = cfg.cls_embed_on
        self.grad_checkpointing = cfg.act_checkpoint
        self.patch_embed = PatchEmbed(
            cfg.in_chans, cfg.embed_dim, cfg.patch_kernel, cfg.patch_stride, cfg.patch_padding
        )
        self.patch_grid = cfg.patch_grid

        if cfg.cls_embed_on:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        num_patches = 1
        for s in self.patch_grid:
            num_patches *= s
        self.sep_pos_embed = cfg.use_abs_pos and cfg.sep_pos_embed and self.ndim == 3
        if cfg.use_abs_pos:
            if self.sep_pos_embed:
                t, h, w = self.patch_grid
                self.pos_embed_spatial = nn.Parameter(torch.zeros(1, h * w, cfg.embed_dim))
                self.pos_embed_temporal = nn.Parameter(torch.zeros(1, t, cfg.embed_dim))
                if cfg.cls_embed_on:
                    self.pos_embed_class = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
            else:
                self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + int(cfg.cls_embed_on), cfg.embed_dim))

        self.block_specs = cfg.block_specs()
        attn_kwargs = dict(
            qkv_bias=cfg.qkv_bias,
            mode=cfg.mode,
            pool_first=cfg.pool_first,
            has_cls=cfg.cls_embed_on,
            rel_pos_spatial=cfg.rel_pos_spatial,
            rel_pos_temporal=cfg.rel_pos_temporal,
            rel_pos_zero_init=cfg.rel_pos_zero_init,
            residual_pooling=cfg.residual_pooling,
            residual_pooling_cls=cfg.residual_pooling_cls,
            attn_impl=cfg.attn_impl,
        )
        self.blocks = nn.ModuleList(
            MultiScaleBlock(
                spec, mlp_ratio=cfg.mlp_ratio, dim_mul_in_att=cfg.dim_mul_in_att, norm_eps=cfg.norm_eps, **attn_kwargs
            )
            for spec in self.block_specs
        )
        self.stage_ends = cfg.stage_ends()
        self.feature_info = self._feature_info()
        if cfg.out_norm:
            for info in self.feature_info:
                self.add_module(f"{info['name']}_norm", nn.LayerNorm(info["num_chs"], eps=cfg.norm_eps))
        self.num_features = self.block_specs[-1].dim_out
        self.norm = nn.LayerNorm(self.num_features, eps=cfg.norm_eps) if cfg.final_norm else nn.Identity()
        self.head = ClassifierHead(self.num_features, cfg.num_classes, cfg.head_dropout)
        self._init_weights()

    # ------------------------------------------------------------------ init and metadata
    def _init_weights(self) -> None:
        for name in ("cls_token", "pos_embed", "pos_embed_spatial", "pos_embed_temporal", "pos_embed_class"):
            if hasattr(self, name):
                nn.init.trunc_normal_(getattr(self, name), std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _feature_info(self) -> List[dict]:
        info, reduction = [], self.cfg.patch_stride[-1]
        for k, end in enumerate(self.stage_ends):
            if k > 0:
                start = self.block_specs[self.stage_ends[k - 1] + 1]
                reduction *= start.stride_q[-1] if start.stride_q else 1
            info.append(
                dict(name=f"scale{k + 2}", num_chs=self.block_specs[end].dim_out, reduction=reduction, index=end)
            )
        return info

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Names of parameters that take no weight decay: position embeddings, class token, rel-pos tables."""
        keys = ("cls_token", "pos_embed", "rel_pos_h", "rel_pos_w", "rel_pos_t")
        return {name for name, _ in self.named_parameters() if any(k in name.split(".")[-1] for k in keys)}

    def layer_index(self, name: str) -> int:
        """Depth of a parameter for layer-wise lr decay: 0 for the stem, i + 1 for block i, depth + 1 after."""
        if name.startswith(("patch_embed", "cls_token", "pos_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return len(self.blocks) + 1

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def set_attn_impl(self, impl: str) -> None:
        """Attention kernel of every block: "auto", "sdpa" or "explicit"."""
        if impl not in ("auto", "sdpa", "explicit"):
            raise ValueError(f"attention implementation must be 'auto', 'sdpa' or 'explicit', got {impl!r}")
        for blk in self.blocks:
            blk.attn.attn_impl = impl

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classification head (fine-tuning with another label set)."""
        self.num_classes = num_classes
        self.head = ClassifierHead(self.num_features, num_classes, self.cfg.head_dropout)
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.projection.weight, std=0.02)
            nn.init.zeros_(self.head.projection.bias)

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        axes = "(B, C, H, W)" if self.ndim == 2 else "(B, C, T, H, W)"
        if x.ndim != self.ndim + 2:
            raise ValueError(f"MViT ({self.ndim}-D) expects input of shape {axes}, got {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"MViT expects {self.in_chans} input channels {axes}, got {x.shape[1]} in {tuple(x.shape)}"
            )

    def _abs_pos(self, grid: Tuple[int, ...]) -> torch.Tensor:
        """Absolute position embedding for a token grid, interpolated when it differs from the build grid."""
        cls_on = self.cls_embed_on
        if self.sep_pos_embed:
            t0, h0, w0 = self.patch_grid
            spatial = self.pos_embed_spatial
            if (h0, w0) != tuple(grid[1:]):
                spatial = _resize_grid(spatial, (h0, w0), grid[1:], "bicubic")
            temporal = self.pos_embed_temporal
            if t0 != grid[0]:
                temporal = _resize_grid(temporal, (t0,), grid[:1], "linear")
            pos = (spatial.unsqueeze(1) + temporal.unsqueeze(2)).flatten(1, 2)
            if cls_on:
                pos = torch.cat((self.pos_embed_class, pos), dim=1)
            return pos
        pos = self.pos_embed
        if tuple(grid) != tuple(self.patch_grid):
            cls_pos, patch_pos = (pos[:, :1], pos[:, 1:]) if cls_on else (None, pos)
            mode = "bicubic" if self.ndim == 2 else "trilinear"
            patch_pos = _resize_grid(patch_pos, self.patch_grid, grid, mode)
            pos = torch.cat((cls_pos, patch_pos), dim=1) if cls_on else patch_pos
        return pos

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, ...]]:
        self._check_input(x)
        x, grid = self.patch_embed(x)
        if self.cls_embed_on:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        if self.cfg.use_abs_pos:
            x = x + self._abs_pos(grid)
        return x, grid

    def _run_block(self, blk: nn.Module, x: torch.Tensor, thw: Tuple[int, ...]):
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return grad_checkpoint(blk, x, thw, use_reentrant=False)
        return blk(x, thw)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, [T,] H, W) -> tokens after the final norm, (B, N, C') (class token first when used)."""
        x, thw = self._embed(x)
        for blk in self.blocks:
            x, thw = self._run_block(blk, x, thw)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, N, C') -> logits (B, num_classes): class token, or the mean of the patch tokens."""
        x = x[:, 0] if self.cls_embed_on else x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, [T,] H, W) -> logits (B, num_classes). No softmax, in train or eval mode."""
        return self.forward_head(self.forward_features(x))

    def forward_multiscale(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Stage outputs as feature maps: {"scale2": (B, C2, [T,] H/4, W/4), ..., "scale5": (..., H/32, W/32)}.

        The class token is dropped; each map goes through its own LayerNorm when ``cfg.out_norm``.
        """
        x, thw = self._embed(x)
        outputs: Dict[str, torch.Tensor] = {}
        ends = {info["index"]: info["name"] for info in self.feature_info}
        sp = 1 if self.cls_embed_on else 0
        for i, blk in enumerate(self.blocks):
            x, thw = self._run_block(blk, x, thw)
            if i in ends:
                name = ends[i]
                feat = x[:, sp:]
                if self.cfg.out_norm:
                    feat = getattr(self, f"{name}_norm")(feat)
                outputs[name] = feat.transpose(1, 2).reshape(x.shape[0], -1, *thw)
        return outputs


def _resize_grid(pos: torch.Tensor, old: Tuple[int, ...], new: Tuple[int, ...], mode: str) -> torch.Tensor:
    """Resize a (1, prod(old), C) position embedding laid out on grid ``old`` to grid ``new``."""
    C = pos.shape[-1]
    grid = pos.reshape(1, *old, C).movedim(-1, 1)
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    grid = F.interpolate(grid, size=tuple(new), mode=mode, **kwargs)
    return grid.movedim(1, -1).reshape(1, -1, C)
