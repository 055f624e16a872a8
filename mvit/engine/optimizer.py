"""Optimizer construction: weight-decay groups by parameter name, layer-wise lr decay, batch-scaled lr."""

from __future__ import annotations

import logging
import re
from typing import Any

import torch
from fvcore.common.config import CfgNode
from torch import nn

from ..errors import ConfigError

__all__ = ["build_optimizer", "layer_id", "layer_ids", "lr_scale_factor", "no_weight_decay_names", "param_groups"]

logger = logging.getLogger(__name__)

# Parameters that are positions or tokens rather than weights: never decayed when ZERO_DECAY_POS_CLS is on.
_POS_CLS = re.compile(r"(^|\.)(cls_token|pos_embed\w*|rel_pos_[htw])$")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_STEM = re.compile(r"^(patch_embed|cls_token|pos_embed)")


def no_weight_decay_names(model: nn.Module, zero_wd_1d: bool = True, zero_wd_pos_cls: bool = True) -> set[str]:
    """Names of the parameters that take no weight decay.

    - ``zero_wd_1d``: every parameter with at most one dimension (biases, LayerNorm weights and biases);
    - ``zero_wd_pos_cls``: the class token, absolute position embeddings and the decomposed relative-position
      tables (``rel_pos_h/w/t``; these are 2-D, so the 1-D rule alone would decay them), matched by name and
      by the model's own ``no_weight_decay()``.
    """
    own = set(model.no_weight_decay()) if zero_wd_pos_cls and hasattr(model, "no_weight_decay") else set()
    names = set()
    for name, p in model.named_parameters():
        if (zero_wd_1d and p.ndim <= 1) or (zero_wd_pos_cls and (name in own or _POS_CLS.search(name))):
            names.add(name)
    return names


def layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise lr decay: 0 for the stem (patch embedding, class token, position
    embeddings), ``i + 1`` for ``blocks.{i}``, ``num_layers + 1`` for the final norm and the head (the fallback
    of :func:`layer_ids` for modules without ``group_matcher``)."""
    match = _BLOCK.match(name)
    if match:
        return int(match.group(1)) + 1
    if _STEM.match(name):
        return 0
    return num_layers + 1


def layer_ids(model: nn.Module) -> dict[str, int]:
    """Depth of every parameter for layer-wise lr decay, 0 for the first group.

    From the model's timm-style ``group_matcher()`` when it has one (grouped by ``timm.models.group_parameters``,
    as timm's own layer decay does: groups in order, unmatched parameters last); by name with :func:`layer_id`
    otherwise.
    """
    if hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        return group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    num_layers = len(model.blocks) if hasattr(model, "blocks") else 0
    return {name: layer_id(name, num_layers) for name, _ in model.named_parameters()}


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    zero_wd_1d: bool = True,
    zero_wd_pos_cls: bool = True,
    layer_decay: float = 1.0,
) -> list[dict[str, Any]]:
    """Parameter groups for a torch optimizer.

    Each group has ``params``, ``param_names``, ``weight_decay`` and ``lr_scale`` (multiplied into the scheduled
    lr: ``layer_decay ** (last_layer - layer_id)`` with :func:`layer_ids`; 1.0 for every group when
    ``layer_decay == 1``).
    """
    skip = no_weight_decay_names(model, zero_wd_1d, zero_wd_pos_cls)
    ids = layer_ids(model) if layer_decay != 1.0 else {}
    last_layer = max(ids.values(), default=0)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = ids.get(name, 0)
        decay = name not in skip
        group = groups.setdefault(
            (lid, decay),
            {
                "params": [],
                "param_names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": layer_decay ** (last_layer - lid) if layer_decay != 1.0 else 1.0,
            },
        )
        group["params"].append(p)
        group["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]


def lr_scale_factor(cfg: CfgNode) -> float:
    """Factor applied to every lr of the schedule (base, warmup start, cosine end).

    - ``SOLVER.BASE_LR_SCALE_NUM_SHARDS``: ``NUM_SHARDS`` (PySlowFast's and facebookresearch/mvit's rule, where
      ``TRAIN.BATCH_SIZE`` is the batch of one machine, so the lr grows with the machines as the global batch);
    - ``SOLVER.BASE_LR_BATCH_SIZE`` > 0: ``global batch / BASE_LR_BATCH_SIZE`` with the global batch
      ``TRAIN.BATCH_SIZE x NUM_SHARDS`` (the linear scaling rule, this project's addition);
    - neither: 1 (``BASE_LR`` is the lr).

    Raises:
        ConfigError: both are set (each already scales with the number of machines).
    """
    s = cfg.SOLVER
    if s.BASE_LR_BATCH_SIZE < 0:
        raise ConfigError(f"SOLVER.BASE_LR_BATCH_SIZE must be >= 0 (0: no batch scaling), got {s.BASE_LR_BATCH_SIZE}")
    if s.BASE_LR_BATCH_SIZE > 0 and s.BASE_LR_SCALE_NUM_SHARDS:
        raise ConfigError(
            f"SOLVER.BASE_LR_BATCH_SIZE {s.BASE_LR_BATCH_SIZE} and SOLVER.BASE_LR_SCALE_NUM_SHARDS True both scale "
            "the lr with the number of machines: set SOLVER.BASE_LR_BATCH_SIZE 0 or SOLVER.BASE_LR_SCALE_NUM_SHARDS "
            "False"
        )
    if s.BASE_LR_BATCH_SIZE > 0:
        return cfg.TRAIN.BATCH_SIZE * cfg.NUM_SHARDS / s.BASE_LR_BATCH_SIZE
    if s.BASE_LR_SCALE_NUM_SHARDS:
        return float(cfg.NUM_SHARDS)
    return 1.0


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW (or SGD) over :func:`param_groups` of ``model`` (the unwrapped module, not DDP).

    The lr of every group is set by the schedule before each step (``base * lr_scale``).
    """
    s = cfg.SOLVER
    groups = param_groups(
        model,
        s.WEIGHT_DECAY,
        zero_wd_1d=s.ZERO_WD_1D_PARAM,
        zero_wd_pos_cls=cfg.MVIT.ZERO_DECAY_POS_CLS,
        layer_decay=s.LAYER_DECAY,
    )
    n_skip = sum(len(g["params"]) for g in groups if g["weight_decay"] == 0.0)
    logger.info(
        "optimizer %s: %d parameter groups, %d tensors without weight decay", s.OPTIMIZING_METHOD, len(groups), n_skip
    )
    method = s.OPTIMIZING_METHOD.lower()
    if method == "adamw":
        return torch.optim.AdamW(groups, lr=s.BASE_LR, betas=tuple(s.BETAS), eps=s.ADAMW_EPS)
    if method == "sgd":
        return torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV)
    raise ConfigError(f"SOLVER.OPTIMIZING_METHOD: unknown optimizer {s.OPTIMIZING_METHOD!r} (adamw, sgd)")
