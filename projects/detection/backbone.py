"""MViTv2 as a detectron2 backbone: the core :class:`mvit.models.MViT` in detectron2's detection layout.

The backbone *is* the core model (a subclass, so no second implementation), built from an
:class:`mvit.models.MViTConfig` that reproduces detectron2's ``modeling/backbone/mvit.py`` block by block:

* window attention inside every stage (window 56 tokens in stage 2, halved per stage), global attention in
  the last block of stages 3, 4 and 5;
* kv pooling stride 4 (adaptive: halved per stage), doubled in the last block of stages 3 and 4;
* q pooling (stride 2) and channel/head doubling in the first block of every stage after the first;
* decomposed relative positions, residual pooling, no absolute position embedding, linear drop path;
* one LayerNorm per output (``scale{k}_norm``), no final norm, no classifier.

Parameter names are therefore exactly detectron2's (``blocks.{i}.attn.qkv.weight``, ``scale2_norm.weight``,
...): released detectron2 MViTv2 checkpoints (``backbone.bottom_up.*``) load into a detector built with this
backbone without renaming, and the ImageNet checkpoints of the core load into it by the core's loader.

Use from a LazyConfig with ``L(MViTBackbone)(embed_dim=96, depth=10, ...)`` (the arguments mirror detectron2's
``MViT``), or from a yacs config with ``MODEL.BACKBONE.NAME = "build_mvit_fpn_backbone"`` after
:func:`add_mvit_config`.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from torch import nn

from mvit.errors import ConfigError
from mvit.models import MViT, MViTConfig

__all__ = [
    "MViTBackbone",
    "add_mvit_config",
    "build_mvit_backbone",
    "build_mvit_fpn_backbone",
    "detectron2_mvit_config",
]

STAGE_NAMES: Tuple[str, ...] = ("scale2", "scale3", "scale4", "scale5")


def detectron2_block_layout(
    depth: int, last_block_indexes: Sequence[int], adaptive_kv_stride: int = 4, adaptive_window_size: int = 56
) -> Dict[str, List[int]]:
    """Per-block q stride, kv stride and window size of detectron2's MViT backbone (0 = global attention).

    Example (MViTv2-T, depth 10, last blocks (0, 2, 7, 9)): kv strides [4, 2, 4, 1, 1, 1, 1, 2, 1, 1],
    windows [56, 56, 0, 28, 14, 14, 14, 0, 14, 0], q strides 2 at blocks 1, 3 and 8.
    """
    last = list(last_block_indexes)
    if len(last) != 4 or last != sorted(set(last)) or last[0] < 0 or last[-1] != depth - 1:
        raise ConfigError(
            f"model.backbone.bottom_up.last_block_indexes={tuple(last_block_indexes)}: 4 increasing block indexes "
            f"ending at depth-1={depth - 1} are needed"
        )
    q_strides, kv_strides, windows = [], [], []
    stride_kv, window = adaptive_kv_stride, adaptive_window_size
    for i in range(depth):
        q_strides.append(2 if i - 1 in last else 1)
        # The last block of stages 3 and 4 pools k/v twice as much and attends globally.
        kv_strides.append(stride_kv * 2 if i in (last[1], last[2]) else stride_kv)
        windows.append(0 if i in last[1:] else window)
        if i in last:
            stride_kv = max(stride_kv // 2, 1)
        if i - 1 in last:
            window //= 2
    return {"q_stride": q_strides, "kv_stride": kv_strides, "window_size": windows}


def detectron2_mvit_config(
    *,
    img_size: int = 224,
    patch_kernel: Tuple[int, int] = (7, 7),
    patch_stride: Tuple[int, int] = (4, 4),
    patch_padding: Tuple[int, int] = (3, 3),
    in_chans: int = 3,
    embed_dim: int = 96,
    depth: int = 16,
    num_heads: int = 1,
    last_block_indexes: Sequence[int] = (0, 2, 11, 15),
    qkv_pool_kernel: Tuple[int, int] = (3, 3),
    adaptive_kv_stride: int = 4,
    adaptive_window_size: int = 56,
    residual_pooling: bool = True,
    mlp_ratio: float = 4.0,
    qkv_bias: bool = True,
    drop_path_rate: float = 0.0,
    norm_eps: float = 1e-6,
    use_rel_pos: bool = True,
    rel_pos_zero_init: bool = True,
    use_act_checkpoint: bool = False,
) -> MViTConfig:
    """The core :class:`MViTConfig` of detectron2's MViT backbone with the same arguments.

    ``img_size`` is the size the relative-position tables are laid out for (224: the ImageNet pre-training
    size, as in detectron2); any detection input size interpolates them at run time.
    """
    layout = detectron2_block_layout(depth, last_block_indexes, adaptive_kv_stride, adaptive_window_size)
    stage_starts = [i + 1 for i in last_block_indexes[:-1]]
    return MViTConfig(
        input_size=(img_size, img_size),
        in_chans=in_chans,
        num_classes=0,
        patch_kernel=tuple(patch_kernel),
        patch_stride=tuple(patch_stride),
        patch_padding=tuple(patch_padding),
        embed_dim=embed_dim,
        num_heads=num_heads,
        depth=depth,
        mlp_ratio=mlp_ratio,
        qkv_bias=qkv_bias,
        dim_mul=[[i, 2.0] for i in stage_starts],
        head_mul=[[i, 2.0] for i in stage_starts],
        pool_q_stride=[[i, s, s] for i, s in enumerate(layout["q_stride"])],
        pool_kv_stride=[[i, s, s] for i, s in enumerate(layout["kv_stride"])],
        pool_kv_stride_adaptive=None,
        pool_kvq_kernel=tuple(qkv_pool_kernel),
        mode="conv",
        cls_embed_on=False,
        use_abs_pos=False,
        rel_pos_spatial=use_rel_pos,
        rel_pos_zero_init=rel_pos_zero_init,
        residual_pooling=residual_pooling,
        dim_mul_in_att=True,
        drop_path_rate=drop_path_rate,
        norm_eps=norm_eps,
        window_sizes=layout["window_size"],
        out_norm=True,
        final_norm=False,
        act_checkpoint=use_act_checkpoint,
    )


class MViTBackbone(MViT, Backbone):
    """detectron2 :class:`Backbone` that is the core MViT in detectron2's detection layout.

    Args: those of :func:`detectron2_mvit_config` (detectron2's ``MViT`` arguments, with ``norm_eps`` for its
    ``norm_layer``), plus ``out_features``: which of "scale2".."scale5" to return.

    Shapes: (B, 3, H, W) with H, W multiples of 32 (detectron2 pads to the FPN's size divisibility) ->
    {"scale2": (B, C, H/4, W/4), "scale3": (B, 2C, H/8, W/8), "scale4": (B, 4C, H/16, W/16),
    "scale5": (B, 8C, H/32, W/32)}.
    """

    def __init__(self, *, out_features: Sequence[str] = STAGE_NAMES, **kwargs) -> None:
        unknown = [name for name in out_features if name not in STAGE_NAMES]
        if unknown:
            raise ValueError(f"MViTBackbone: unknown out_features {unknown}; expected a subset of {STAGE_NAMES}")
        super().__init__(detectron2_mvit_config(**kwargs))
        self._out_features = list(out_features)
        info = {item["name"]: item for item in self.feature_info}
        self._out_feature_channels = {name: int(info[name]["num_chs"]) for name in self._out_features}
        self._out_feature_strides = {name: int(info[name]["reduction"]) for name in self._out_features}
        for name in STAGE_NAMES:
            if name not in self._out_features:
                # Outputs nobody asks for have no norm (detectron2 creates none), so no parameter goes unused.
                setattr(self, f"{name}_norm", nn.Identity())

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:  # type: ignore[override]
        """(B, 3, H, W) -> {name: (B, C_name, H / stride, W / stride)} for the requested ``out_features``."""
        features = self.forward_multiscale(x)
        return {name: features[name] for name in self._out_features}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }


# --------------------------------------------------------------------------- yacs (CfgNode) configs
def add_mvit_config(cfg: CfgNode) -> None:
    """Add ``MODEL.MVIT.*`` (defaults: MViTv2-T as in detectron2's projects/MViTv2) to a detectron2 config."""
    cfg.MODEL.MVIT = CfgNode()
    cfg.MODEL.MVIT.EMBED_DIM = 96
    cfg.MODEL.MVIT.DEPTH = 10
    cfg.MODEL.MVIT.NUM_HEADS = 1
    cfg.MODEL.MVIT.LAST_BLOCK_INDEXES = (0, 2, 7, 9)
    cfg.MODEL.MVIT.ADAPTIVE_KV_STRIDE = 4
    cfg.MODEL.MVIT.ADAPTIVE_WINDOW_SIZE = 56
    cfg.MODEL.MVIT.RESIDUAL_POOLING = True
    cfg.MODEL.MVIT.MLP_RATIO = 4.0
    cfg.MODEL.MVIT.DROP_PATH_RATE = 0.2
    cfg.MODEL.MVIT.PRETRAIN_IMG_SIZE = 224
    cfg.MODEL.MVIT.ACT_CHECKPOINT = False
    cfg.MODEL.MVIT.OUT_FEATURES = list(STAGE_NAMES)


@BACKBONE_REGISTRY.register()
def build_mvit_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> MViTBackbone:
    """``MODEL.BACKBONE.NAME = "build_mvit_backbone"``: the MViT alone (needs :func:`add_mvit_config`)."""
    m = cfg.MODEL.MVIT
    return MViTBackbone(
        in_chans=input_shape.channels,
        img_size=m.PRETRAIN_IMG_SIZE,
        embed_dim=m.EMBED_DIM,
        depth=m.DEPTH,
        num_heads=m.NUM_HEADS,
        last_block_indexes=tuple(m.LAST_BLOCK_INDEXES),
        adaptive_kv_stride=m.ADAPTIVE_KV_STRIDE,
        adaptive_window_size=m.ADAPTIVE_WINDOW_SIZE,
        residual_pooling=m.RESIDUAL_POOLING,
        mlp_ratio=m.MLP_RATIO,
        drop_path_rate=m.DROP_PATH_RATE,
        use_act_checkpoint=m.ACT_CHECKPOINT,
        out_features=tuple(m.OUT_FEATURES),
    )


@BACKBONE_REGISTRY.register()
def build_mvit_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """``MODEL.BACKBONE.NAME = "build_mvit_fpn_backbone"``: MViT + FPN (``MODEL.FPN.*``) + a max-pooled P6."""
    return FPN(
        bottom_up=build_mvit_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
