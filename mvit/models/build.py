"""Translate an experiment config (``CfgNode``: MVIT.*, MODEL.*, DATA.*) into the model's own config."""

from __future__ import annotations

from fvcore.common.config import CfgNode

from .config import MViTConfig
from .mvit import MViT

__all__ = ["build_model", "config_from_cfg"]


def config_from_cfg(cfg: CfgNode) -> MViTConfig:
    """The one place where experiment keys become model fields (the config is read, never mutated)."""
    m = cfg.MVIT
    ndim = len(m.PATCH_KERNEL)
    crop = cfg.DATA.TRAIN_CROP_SIZE
    if ndim == 3:
        input_size = (cfg.DATA.NUM_FRAMES, crop, crop)
    elif cfg.DATA.NUM_FRAMES > 1:
        raise ValueError(
            f"DATA.NUM_FRAMES={cfg.DATA.NUM_FRAMES} needs a 3-D model, but MVIT.PATCH_KERNEL={list(m.PATCH_KERNEL)} is 2-D"
        )
    else:
        input_size = (crop, crop)
    return MViTConfig(
        input_size=input_size,
        in_chans=cfg.DATA.IN_CHANS,
        num_classes=cfg.MODEL.NUM_CLASSES,
        patch_kernel=tuple(m.PATCH_KERNEL),
        patch_stride=tuple(m.PATCH_STRIDE),
        patch_padding=tuple(m.PATCH_PADDING),
        embed_dim=m.EMBED_DIM,
        num_heads=m.NUM_HEADS,
        depth=m.DEPTH,
        mlp_ratio=m.MLP_RATIO,
        qkv_bias=m.QKV_BIAS,
        dim_mul=[tuple(x) for x in m.DIM_MUL],
        head_mul=[tuple(x) for x in m.HEAD_MUL],
        pool_q_stride=[tuple(x) for x in m.POOL_Q_STRIDE],
        pool_kv_stride=[tuple(x) for x in m.POOL_KV_STRIDE],
        pool_kv_stride_adaptive=tuple(m.POOL_KV_STRIDE_ADAPTIVE) or None,
        pool_kvq_kernel=tuple(m.POOL_KVQ_KERNEL),
        mode=m.MODE,
        pool_first=m.POOL_FIRST,
        cls_embed_on=m.CLS_EMBED_ON,
        use_abs_pos=m.USE_ABS_POS,
        sep_pos_embed=m.SEP_POS_EMBED,
        rel_pos_spatial=m.REL_POS_SPATIAL,
        rel_pos_temporal=m.REL_POS_TEMPORAL,
        rel_pos_zero_init=m.REL_POS_ZERO_INIT,
        residual_pooling=m.RESIDUAL_POOLING,
        residual_pooling_cls=m.RESIDUAL_POOLING_CLS,
        dim_mul_in_att=m.DIM_MUL_IN_ATT,
        drop_path_rate=m.DROPPATH_RATE,
        head_dropout=cfg.MODEL.DROPOUT_RATE,
        attn_impl=m.ATTN_IMPL,
        act_checkpoint=cfg.MODEL.ACT_CHECKPOINT,
    )


def build_model(cfg: CfgNode) -> MViT:
    """Build the MViT described by an experiment config."""
    return MViT(config_from_cfg(cfg))
