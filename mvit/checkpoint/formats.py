"""Weights in every public MViTv2 format, detected automatically and loaded with a report.

One converter per foreign format maps its keys onto this project's names, which are the official ones
(``blocks.{i}.attn.qkv`` ...):

====================  ==========================================================================
format                how it is recognised
====================  ==========================================================================
``official``          official MViTv2 / PySlowFast ``.pyth``: ``{"model_state": ...}`` (or bare)
``mvit``              this project: ``{"format": "mvit-weights" | "mvit-train-state", "model": ...}``
``mmpretrain``        mmpretrain / mmclassification: ``backbone.`` / ``head.`` prefixes
``timm``              timm ``mvitv2_*``: ``stages.{s}.blocks.{j}.*``
``torchvision``       torchvision ``mvit_v2_s``: ``conv_proj.*``, ``pos_encoding.class_token``
``detectron2``        detectron2 MViTv2 (``backbone.bottom_up.*``): backbone part only
====================  ==========================================================================

Loading is strict by default: a missing, unexpected or mis-shaped key raises :class:`CheckpointError`
naming the keys. ``strict=False`` is the fine-tuning mode: rel-pos tables and position embeddings are
resized, 2-D kernels are inflated over time (image -> video), and keys that still do not fit are left
at their initial values and reported.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from iopath.common.file_io import g_pathmgr as PathManager
from torch import nn

from ..errors import CheckpointError, report
from ..models.pos_embed import resize_pos_grid
from ..models.rel_pos import resize_rel_pos
from .hub import resolve_checkpoint
from .safe_io import load_pickle, read_safetensors, torch_load, write_safetensors
from .state import atomic_save

__all__ = [
    "LoadReport",
    "convert_state_dict",
    "detect_format",
    "load_checkpoint",
    "read_checkpoint",
    "save_state",
    "save_weights",
    "unwrap_state_dict",
]

logger = logging.getLogger(__name__)

WEIGHTS_FORMAT = "mvit-weights"
StateDict = Dict[str, torch.Tensor]


@dataclass
class LoadReport:
    """What a load did: which keys were used, resized, left new or dropped."""

    path: str
    format: str
    loaded: List[str] = field(default_factory=list)
    resized: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        lines = [f"{self.path}: {self.format} format, {len(self.loaded)} tensors loaded"]
        if self.resized:
            lines.append(f"  resized ({len(self.resized)}): {_head(self.resized)}")
        if self.missing:
            lines.append(f"  left at initial values ({len(self.missing)}): {_head(self.missing)}")
        if self.unexpected:
            lines.append(f"  not used ({len(self.unexpected)}): {_head(self.unexpected)}")
        if self.mismatched:
            shown = [f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched[:5]]
            lines.append(f"  shape mismatch ({len(self.mismatched)}): {'; '.join(shown)}")
        return "\n".join(lines)


def _head(keys: List[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


# --------------------------------------------------------------------------- reading
def read_checkpoint(path: str, *, trust_pickle: bool = False) -> dict:
    """Read a checkpoint file into a dict, with a one-line error naming the file when it cannot be read.

    Nothing in the file is executed (see :mod:`mvit.checkpoint.safe_io`): PyTorch files load with
    ``weights_only=True`` and an allow-list, detectron2 ``.pkl`` files with a restricted unpickler,
    ``.safetensors`` files hold tensors only. ``trust_pickle=True`` lifts the allow-lists for a trusted file.
    ``path`` may also be an ``http(s)://`` URL or ``zoo:<weights tag>``, read from torch.hub's cache.
    """
    path = resolve_checkpoint(path)
    if not PathManager.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if str(path).endswith(".safetensors"):
        try:
            return read_safetensors(path)
        except Exception as err:  # noqa: BLE001 - any failure to parse means a bad file
            raise CheckpointError(f"{path}: cannot read safetensors file: {report(err)}") from None
    try:
        with PathManager.open(path, "rb") as f:
            if str(path).endswith(".pkl"):
                obj = load_pickle(f, path, trust_pickle=trust_pickle)
            else:
                obj = torch_load(f, path, trust_pickle=trust_pickle)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means a bad file
        raise CheckpointError(
            f"{path}: cannot read checkpoint (truncated or not a PyTorch file?): {report(err)}"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    if str(path).endswith(".pkl"):  # detectron2 model zoo: numpy arrays under "model"
        state = obj.get("model", obj)
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: expected a dict of arrays under 'model', got {type(state).__name__}")
        obj = {"model": {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}}
    return obj


def unwrap_state_dict(obj: dict) -> Tuple[StateDict, Optional[str]]:
    """Find the state dict inside a checkpoint container; also return a format hint from the container."""
    fmt = obj.get("format") if isinstance(obj.get("format"), str) else None
    if fmt in (WEIGHTS_FORMAT, "mvit-train-state"):
        return obj["model"], "mvit"
    for key in ("model_state", "state_dict", "model", "module"):
        if key in obj and isinstance(obj[key], dict):
            return obj[key], None
    return obj, None


def detect_format(state: StateDict, hint: Optional[str] = None) -> str:
    """Name of the format of a state dict (see the module docstring)."""
    if hint:
        return hint
    keys = list(state)
    if any(k.startswith("backbone.bottom_up.") for k in keys):
        return "detectron2"
    if any(k.startswith("backbone.") for k in keys):
        return "mmpretrain"
    if any(k.startswith("stages.") for k in keys):
        return "timm"
    if "conv_proj.weight" in state or any(k.startswith("pos_encoding.") for k in keys):
        return "torchvision"
    if any(k.startswith("blocks.") for k in keys) or "patch_embed.proj.weight" in state:
        return "official"
    raise CheckpointError(f"unknown checkpoint format: no MViT keys among {_head(sorted(keys), 4)}")


# --------------------------------------------------------------------------- converters
def _from_timm(state: StateDict, model: Optional[nn.Module]) -> StateDict:
    stage_blocks: Dict[int, int] = {}
    for k in state:
        m = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.", k)
        if m:
            s, b = int(m.group(1)), int(m.group(2))
            stage_blocks[s] = max(stage_blocks.get(s, 0), b + 1)
    offsets, total = {}, 0
    for s in sorted(stage_blocks):
        offsets[s] = total
        total += stage_blocks[s]
    out = {}
    for k, v in state.items():
        m = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)", k)
        if m:
            rest = re.sub(r"^shortcut_proj_(attn|mlp)\.", "proj.", m.group(3))
            k = f"blocks.{offsets[int(m.group(1))] + int(m.group(2))}.{rest}"
        k = k.replace("head.fc.", "head.projection.")
        out[k] = v
    if model is not None and getattr(model, "cls_embed_on", False) and not model.config.residual_pooling_cls:
        logger.warning(
            "timm class-token weights were trained with residual pooling on the class token too; "
            "build the model with residual_pooling_cls=True to reproduce timm's outputs"
        )
    return out


def _from_torchvision(state: StateDict, model: Optional[nn.Module]) -> StateDict:
    renames = [
        (r"^conv_proj\.", "patch_embed.proj."),
        (r"^pos_encoding\.class_token$", "cls_token"),
        (r"\.attn\.project\.0\.", ".attn.proj."),
        (r"\.attn\.pool_([qkv])\.pool\.", r".attn.pool_\1."),
        (r"\.attn\.pool_([qkv])\.norm_act\.0\.", r".attn.norm_\1."),
        (r"\.mlp\.0\.", ".mlp.fc1."),
        (r"\.mlp\.3\.", ".mlp.fc2."),
        (r"^(blocks\.\d+)\.project\.", r"\1.proj."),
        (r"^head\.1\.", "head.projection."),
    ]
    out = {}
    for k, v in state.items():
        for pattern, repl in renames:
            k = re.sub(pattern, repl, k)
        if k == "cls_token" and v.ndim == 1:
            v = v.reshape(1, 1, -1)
        out[k] = v
    return out


def _from_mmpretrain(state: StateDict, model: Optional[nn.Module]) -> StateDict:
    norms = sorted(int(m.group(1)) for k in state if (m := re.match(r"backbone\.norm(\d+)\.", k)))
    last_norm = f"backbone.norm{norms[-1]}." if norms else None
    out = {}
    for k, v in state.items():
        if last_norm and k.startswith(last_norm):
            k = "norm." + k[len(last_norm) :]
        k = k.replace("backbone.patch_embed.projection.", "patch_embed.proj.")
        k = re.sub(r"^backbone\.", "", k)
        k = k.replace("head.fc.", "head.projection.")
        out[k] = v
    return out


def _from_detectron2(state: StateDict, model: Optional[nn.Module]) -> StateDict:
    prefix = "backbone.bottom_up."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


_CONVERTERS = {
    "official": lambda s, m: dict(s),
    "mvit": lambda s, m: dict(s),
    "timm": _from_timm,
    "torchvision": _from_torchvision,
    "mmpretrain": _from_mmpretrain,
    "detectron2": _from_detectron2,
}


def convert_state_dict(state: StateDict, fmt: str, model: Optional[nn.Module] = None) -> StateDict:
    """Rename the keys of a state dict of format ``fmt`` to this project's (official) names."""
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
    return _CONVERTERS[fmt](state, model)


# --------------------------------------------------------------------------- fitting shapes
def _fit_lossless(name: str, value: torch.Tensor, target: torch.Tensor) -> Optional[torch.Tensor]:
    """Exact reshapes: squeeze a singleton time axis of a conv kernel (official image checkpoints may store
    Conv3d kernels with T=1) or a flat class token."""
    if value.numel() == target.numel() and value.ndim == target.ndim + 1 and value.ndim == 5 and value.shape[2] == 1:
        return value.squeeze(2)
    if name == "cls_token" and value.numel() == target.numel():
        return value.reshape(target.shape)
    return None


def _fit_resize(name: str, value: torch.Tensor, target: torch.Tensor, model: nn.Module) -> Optional[torch.Tensor]:
    """Fine-tuning resizes: rel-pos tables, 2-D -> 3-D kernel inflation, position embeddings."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("rel_pos_h", "rel_pos_w", "rel_pos_t") and value.ndim == 2 and value.shape[1] == target.shape[1]:
        return resize_rel_pos(value, target.shape[0])
    if (
        value.ndim == 4
        and target.ndim == 5
        and value.shape[:2] == target.shape[:2]
        and value.shape[2:] == target.shape[3:]
    ):
        # Inflate an image kernel over time, keeping the response to a static clip (PySlowFast's rule).
        t = target.shape[2]
        return value.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
    if leaf == "pos_embed" and value.ndim == 3 and value.shape[-1] == target.shape[-1]:
        extra = int(getattr(model, "cls_embed_on", False))
        old_n, new_n = value.shape[1] - extra, target.shape[1] - extra
        old_side, new_grid = math.isqrt(old_n), getattr(model, "patch_grid", None)
        if (
            old_side * old_side == old_n
            and new_grid is not None
            and len(new_grid) == 2
            and math.prod(new_grid) == new_n
        ):
            grid = resize_pos_grid(value[:, extra:], (old_side, old_side), tuple(new_grid))
            return torch.cat((value[:, :extra], grid), dim=1)
    return None


def _fix(report: LoadReport) -> str:
    """What to change, said for the command line and for Python (a strict load fails in both)."""
    fine_tune = "or fine-tune from it (TRAIN.CHECKPOINT_FILE_PATH, strict=False in Python: loads what fits)"
    heads = [(k, a, b) for k, a, b in report.mismatched if k.startswith("head.")]
    if heads and len(heads) == len(report.mismatched) and not report.missing and not report.unexpected:
        n = heads[0][1][0]
        return (
            f"Its head has {n} classes, the model's {heads[0][2][0]}: build the model with {n} (MODEL.NUM_CLASSES {n} "
            f"on the command line or in the run's config.yaml, --set num_classes={n} where a tool has --set, "
            f"num_classes={n} in Python), {fine_tune}."
        )
    return (
        "Is it another architecture? Name the one it was trained with (the run's config.yaml as --cfg, MVIT.ARCH, "
        f"--model), {fine_tune}."
    )


def load_checkpoint(
    model: nn.Module, path: str, strict: bool = True, log: bool = True, *, trust_pickle: bool = False
) -> LoadReport:
    """Load weights of any supported format into ``model``.

    Args:
        model: an :class:`mvit.models.MViT` (or a module with the same parameter names).
        path: checkpoint path (any iopath path), URL or ``zoo:<weights tag>``.
        strict: raise :class:`CheckpointError` on any missing, unexpected or mis-shaped key. With ``False``,
            resize what can be resized (rel-pos tables, position embeddings, image -> video kernels) and leave
            the rest (e.g. a head of another number of classes) at its initial values.
        log: log the report at INFO (WARNING when keys were left out).
        trust_pickle: read a pickle without the allow-list (only for a file you trust: it can run code).

    Returns:
        A :class:`LoadReport` listing loaded, resized, missing, unexpected and mismatched keys.
    """
    obj = read_checkpoint(path, trust_pickle=trust_pickle)
    raw, hint = unwrap_state_dict(obj)
    fmt = detect_format(raw, hint)
    state = convert_state_dict(raw, fmt, model)
    target = model.state_dict()
    report = LoadReport(path=str(path), format=fmt)
    to_load: StateDict = {}
    for name, value in state.items():
        if name not in target:
            report.unexpected.append(name)
            continue
        want = target[name]
        if value.shape != want.shape:
            fitted = _fit_lossless(name, value, want)
            if fitted is None and not strict:
                fitted = _fit_resize(name, value, want, model)
                if fitted is not None:
                    report.resized.append(f"{name} {tuple(value.shape)}->{tuple(want.shape)}")
            if fitted is None:
                report.mismatched.append((name, tuple(value.shape), tuple(want.shape)))
                continue
            value = fitted
        to_load[name] = value.to(dtype=want.dtype)
        report.loaded.append(name)
    mismatched = {k for k, _, _ in report.mismatched}
    report.missing = [k for k in target if k not in to_load and k not in mismatched]
    if strict and not report.ok:
        problems = []
        if report.mismatched:
            k, a, b = report.mismatched[0]
            problems.append(f"{len(report.mismatched)} mis-shaped (first: {k} {a} vs model {b})")
        if report.missing:
            problems.append(f"{len(report.missing)} missing (first: {_head(report.missing, 3)})")
        if report.unexpected:
            problems.append(f"{len(report.unexpected)} unexpected (first: {_head(report.unexpected, 3)})")
        raise CheckpointError(f"{path} ({fmt} format) does not match the model: {'; '.join(problems)}. {_fix(report)}")
    model.load_state_dict(to_load, strict=False)
    if log:
        (logger.warning if not report.ok else logger.info)(report.summary())
    return report


def save_weights(model: nn.Module, path: str, extra: Optional[dict] = None) -> None:
    """Write this project's weights format (atomically): the state dict plus the model config.

    A path ending in ``.safetensors`` writes safetensors (tensors, with the format and config as metadata);
    any other path a ``torch.save`` file that loads with ``weights_only=True``.
    """
    obj = {"format": WEIGHTS_FORMAT, "model": model.state_dict()}
    config = getattr(model, "config", None)
    if config is not None:
        obj["model_config"] = asdict(config)
    obj.update(extra or {})
    save_state(obj, os.fspath(path))


def save_state(obj: dict, path: str) -> None:
    """Write ``{"model": state_dict, ...}`` atomically, as safetensors when ``path`` ends in ``.safetensors``."""
    if path.endswith(".safetensors"):
        write_safetensors(obj["model"], path, {k: v for k, v in obj.items() if k != "model"})
    else:
        atomic_save(obj, path)
