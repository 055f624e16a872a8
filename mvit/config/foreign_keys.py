"""The keys of official MViTv2 (facebookresearch/mvit) and PySlowFast configs that this project's config lacks.

Both publishers' ``defaults.py`` define keys this project does not have. :data:`FOREIGN_KEYS` lists every
one of them with the publisher's default and what it becomes here, decided from what the publisher's code
does with it:

* ``IGNORED``: no effect on a run here (another architecture's options, logging, visualisation, speed
  knobs); accepted, and the keys a file sets are listed once in the log.
* ``CHECKED``: a value changes behaviour the publisher implements and this project does not. The values
  that mean what this project does (``allowed``, the publisher's default among them) are accepted like
  ``IGNORED`` keys; any other value is a :class:`~mvit.errors.ConfigError` naming the file, line, key and
  value and saying what is supported, never silently dropped (same file, same meaning).
* ``TRANSLATED``: the same setting under one of this project's keys, which receives the value.

A few shared keys also take a foreign *value* (:data:`VALUE_ALIASES`, e.g. PySlowFast's boolean
``TRAIN.MIXED_PRECISION``). A file that sets ``MODEL.ARCH`` (a key only PySlowFast has) is a PySlowFast
config: the shared keys it leaves out take PySlowFast's defaults where they differ from ours
(:data:`PYSLOWFAST_DEFAULTS`: its K400 files state no ``DATA.MEAN``, meaning 0.45, not ImageNet's).

The yaml reading, ``_BASE_`` chains and overrides that apply this table are in :mod:`mvit.config.compat`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from fvcore.common.config import CfgNode

from ..errors import ConfigError

__all__ = [
    "CHECKED",
    "FOREIGN_KEYS",
    "IGNORED",
    "PYSLOWFAST_DEFAULTS",
    "TRANSLATED",
    "VALUE_ALIASES",
    "ForeignKey",
    "find_foreign_key",
]

IGNORED, CHECKED, TRANSLATED = "ignored", "checked", "translated"


@dataclass(frozen=True)
class ForeignKey:
    """One key of the publishers' configs that this project's config lacks.

    ``key`` is dotted; ``SECTION.*`` stands for a whole section (any key below it, unless listed on its own).
    ``default`` is the publisher's default. ``allowed`` (``CHECKED``): the values accepted, ``check`` an extra
    condition returning an error text. ``to`` / ``convert`` (``TRANSLATED``): our key and the value it gets;
    ``apply`` instead rewrites the config itself and returns what it changed.
    """

    key: str
    default: Any
    kind: str
    reason: str
    allowed: Tuple[Any, ...] = ()
    check: Optional[Callable[[Any, CfgNode], Optional[str]]] = None
    to: str = ""
    convert: Callable[[Any], Any] = lambda v: v
    apply: Optional[Callable[[Any, CfgNode], List[str]]] = None


def _ignored(reason: str, *items: Tuple[str, Any]) -> List[ForeignKey]:
    return [ForeignKey(key, default, IGNORED, reason) for key, default in items]


def _only_default(reason: str, *items: Tuple[str, Any]) -> List[ForeignKey]:
    """Keys whose publisher default is the only behaviour implemented here."""
    return [ForeignKey(key, default, CHECKED, reason, allowed=(default,)) for key, default in items]


def _epoch_reset_check(value: Any, cfg: CfgNode) -> Optional[str]:
    if value is False and cfg.TRAIN.ENABLE and cfg.TRAIN.CHECKPOINT_FILE_PATH:
        return (
            "False continues the publisher's run at the checkpoint's epoch with its optimizer state; here "
            "TRAIN.CHECKPOINT_FILE_PATH only initialises the weights (set True), and a run resumes from "
            "OUTPUT_DIR/checkpoints"
        )
    return None


def _drop_time(name: str, values: Sequence[Any], index: int) -> List[Any]:
    """A PySlowFast 2-D model's 3-D pooling entry without its time component, which must be 1."""
    values = list(values)
    if len(values) != index + 3:
        return values  # already 2-D
    if values[index] != 1:
        raise ConfigError(f"MVIT.PATCH_2D True needs a time component 1 in {name}, got {values}")
    return values[:index] + values[index + 1 :]


def _lists(value: Any) -> Any:
    return [_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def _apply_patch_2d(value: Any, cfg: CfgNode) -> List[str]:
    """PySlowFast builds an image model with 3-D pooling kernels of time size 1; ours is 2-D throughout."""
    if not value:
        return []
    m = cfg.MVIT
    if len(m.PATCH_KERNEL) != 2:
        raise ConfigError(f"MVIT.PATCH_2D True needs a 2-D MVIT.PATCH_KERNEL, got {list(m.PATCH_KERNEL)}")
    changed = []
    for name, index, nested in (
        ("POOL_KVQ_KERNEL", 0, False),
        ("POOL_KV_STRIDE_ADAPTIVE", 0, False),
        ("POOL_Q_STRIDE", 1, True),
        ("POOL_KV_STRIDE", 1, True),
    ):
        old = _lists(m[name])
        new = [_drop_time(name, v, index) for v in old] if nested else _drop_time(name, old, index)
        if new != old:
            m[name] = new
            changed.append(f"MVIT.{name} {new}")
    return changed


# ---------------------------------------------------------------------------------------------------------
# The table. `key` (dotted), the publisher's default, and why; "mvit" = facebookresearch/mvit's defaults.py,
# "PySlowFast" = slowfast/config/defaults.py. Keys both define share one row.
# ---------------------------------------------------------------------------------------------------------
FOREIGN_KEYS: List[ForeignKey] = [
    # Model choice: the publishers build the model named here; this project builds MViT only. (MODEL_NAME's
    # default is 'MViT' in mvit, 'SlowFast' in PySlowFast, whose MViT files all set 'MViT'.)
    ForeignKey(
        "MODEL.ARCH", "slowfast", CHECKED, "this project builds MViT only (PySlowFast's 'mvit' arch)", allowed=("mvit",)
    ),
    ForeignKey("MODEL.MODEL_NAME", "MViT", CHECKED, "this project builds MViT only", allowed=("MViT",)),
    # Other architectures' sections and options (PySlowFast): read only by the ResNet / SlowFast / X3D
    # builders and their BatchNorm layers; MViT has none of them (MODEL.ARCH above is checked).
    *_ignored(
        "options of other architectures (ResNet, SlowFast, X3D, non-local, BatchNorm)",
        ("RESNET.*", None),
        ("X3D.*", None),
        ("NONLOCAL.*", None),
        ("SLOWFAST.*", None),
        ("BN.*", None),
        ("MODEL.SINGLE_PATHWAY_ARCH", ["2d", "c2d", "i3d", "slow", "x3d", "mvit", "maskmvit"]),
        ("MODEL.MULTI_PATHWAY_ARCH", ["slowfast"]),
        ("MODEL.DROPCONNECT_RATE", 0.0),
        ("MODEL.FC_INIT_STD", 0.01),
        ("MODEL.FROZEN_BN", False),
    ),
    # MViT options the model here does not have: only the publisher default's behaviour exists.
    *_only_default(
        "the MViTv2 model here has LayerNorm, fused qkv, no attention dropout, no layer scale, a standard head",
        ("MVIT.NORM", "layernorm"),
        ("MVIT.NORM_STEM", False),
        ("MVIT.DROPOUT_RATE", 0.0),
        ("MVIT.SEPARATE_QKV", False),
        ("MVIT.LAYER_SCALE_INIT_VALUE", 0.0),
        ("MVIT.HEAD_INIT_SCALE", 1.0),
        ("MVIT.USE_MEAN_POOLING", False),
        ("MVIT.USE_FIXED_SINCOS_POS", False),
        ("MVIT.REV.ENABLE", False),
        ("MODEL.DETACH_FINAL_FC", False),
    ),
    # Test-time scores are softmax probabilities here (summed over the views), PySlowFast's default head act.
    ForeignKey("MODEL.HEAD_ACT", "softmax", CHECKED, "test scores are softmax probabilities", allowed=("softmax",)),
    *_ignored(
        "reversible MViT options, read only when MVIT.REV.ENABLE",
        ("MVIT.REV.RESPATH_FUSE", "concat"),
        ("MVIT.REV.BUFFER_LAYERS", []),
        ("MVIT.REV.RES_PATH", "conv"),
        ("MVIT.REV.PRE_Q_FUSION", "avg"),
    ),
    # PySlowFast's image models: a 2-D patch stem with 3-D pooling of time size 1 = this project's 2-D model.
    ForeignKey(
        "MVIT.PATCH_2D",
        False,
        TRANSLATED,
        "a 2-D model: pooling kernels and strides lose their time entry",
        apply=_apply_patch_2d,
    ),
    # Data keys under other names. PySlowFast's MViT reads the first pathway's channels only.
    ForeignKey(
        "DATA.INPUT_CHANNEL_NUM",
        [3, 3],
        TRANSLATED,
        "input channels of the (first) pathway",
        to="DATA.IN_CHANS",
        convert=lambda v: int(v[0]),
    ),
    ForeignKey("DATA.ENSEMBLE_METHOD", "sum", TRANSLATED, "view aggregation", to="TEST.ENSEMBLE_METHOD"),
    ForeignKey("DATA.IN_VAL_CROP_RATIO", 0.875, TRANSLATED, "test crop / resize ratio", to="DATA.VAL_CROP_RATIO"),
    # Data behaviours not implemented here (multi-label, SSL augmentations, csv chunks,
    # ImageNet-21k splits, pre-dumped image lists, fake data): only the default is accepted.
    *_only_default(
        "this data pipeline does not implement it",
        ("DATA.MULTI_LABEL", False),
        ("DATA.TRAIN_JITTER_MOTION_SHIFT", False),
        ("DATA.TRAIN_JITTER_FPS", 0.0),
        ("DATA.TRAIN_CROP_NUM_TEMPORAL", 1),
        ("DATA.TRAIN_CROP_NUM_SPATIAL", 1),
        ("DATA.COLOR_RND_GRAYSCALE", 0.0),
        ("DATA.TIME_DIFF_PROB", 0.0),
        ("DATA.SSL_COLOR_JITTER", False),
        ("DATA.SSL_MOCOV2_AUG", False),
        ("DATA.LOADER_CHUNK_SIZE", 0),
        ("DATA.LOADER_CHUNK_OVERALL_SIZE", 0),
        ("DATA.SKIP_ROWS", 0),
        ("DATA.DUMMY_LOAD", False),
        ("DATA.PATH_TO_PRELOAD_IMDB", ""),
        ("DATA.IN22K_TRAINVAL", False),
        ("DATA.IN22k_VAL_IN1K", ""),
        ("AUG.GEN_MASK_LOADER", False),
        ("AUG.MASK_RATIO", 0.0),
        # Erasing per augmentation split (timm's re_split): this pipeline has no augmentation splits.
        ("AUG.RE_SPLIT", False),
        ("TEST.NUM_TEMPORAL_CLIPS", []),
    ),
    # Read only by the augmentations above when enabled (SSL colour, PCA lighting, masks), or a decoder speed
    # knob (frames are rescaled by the transforms anyway).
    *_ignored(
        "read only by augmentations that are off, or a decoding speed option",
        ("DATA.SSL_COLOR_BRI_CON_SAT", [0.4, 0.4, 0.4]),
        ("DATA.SSL_COLOR_HUE", 0.1),
        ("DATA.SSL_BLUR_SIGMA_MIN", [0.0, 0.1]),
        ("DATA.SSL_BLUR_SIGMA_MAX", [0.0, 2.0]),
        ("DATA.TRAIN_PCA_EIGVAL", [0.225, 0.224, 0.229]),
        ("DATA.TRAIN_PCA_EIGVEC", [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.814], [-0.5836, -0.6948, 0.4203]]),
        ("AUG.MASK_TUBE", False),
        ("AUG.MASK_FRAMES", False),
        ("AUG.MASK_WINDOW_SIZE", [8, 7, 7]),
        ("AUG.MAX_MASK_PATCHES_PER_BLOCK", None),
        ("DATA.DECODING_SHORT_SIZE", 256),
        ("DATA_LOADER.ENABLE_MULTI_THREAD_DECODE", False),
        ("PREFETCH.*", None),
    ),
    # Checkpoints: the loader detects the format, squeezes a singleton time axis (2-D model) and inflates 2-D
    # kernels over time (3-D model) by itself, which is what these switches ask the publishers' loaders to do.
    *_ignored(
        "the checkpoint loader squeezes and inflates kernels by itself",
        ("TEST.CHECKPOINT_SQUEEZE_TEMPORAL", True),
        ("TRAIN.CHECKPOINT_INFLATE", False),
        ("TRAIN.CHECKPOINT_IN_INIT", False),
    ),
    *_only_default(
        "checkpoints are PyTorch files whose key layout the loader recognises",
        ("TRAIN.CHECKPOINT_TYPE", "pytorch"),
        ("TEST.CHECKPOINT_TYPE", "pytorch"),
        ("TRAIN.CHECKPOINT_CLEAR_NAME_PATTERN", ()),
    ),
    ForeignKey(
        "TRAIN.CHECKPOINT_EPOCH_RESET",
        False,
        CHECKED,
        "TRAIN.CHECKPOINT_FILE_PATH initialises weights only",
        allowed=(True, False),
        check=_epoch_reset_check,
    ),
    # Training-loop behaviours not implemented here.
    *_only_default(
        "the training loop here does not implement it",
        ("TRAIN.KILL_LOSS_EXPLOSION_FACTOR", 0.0),
        ("MODEL.FP16_ALLREDUCE", False),
        ("SOLVER.DAMPENING", 0.0),
        ("SOLVER.CLIP_GRAD_VAL", None),
        ("SOLVER.LARS_ON", False),
    ),
    # Read only by the 'steps' / 'exp' lr policies, which SOLVER.LR_POLICY rejects here (cosine, constant); the
    # warm-up starts at WARMUP_START_LR in the publishers' code as here (WARMUP_FACTOR is never read).
    *_ignored(
        "read only by lr policies other than cosine / constant",
        ("SOLVER.STEP_SIZE", 1),
        ("SOLVER.STEPS", []),
        ("SOLVER.LRS", []),
        ("SOLVER.GAMMA", 0.1),
        ("SOLVER.WARMUP_FACTOR", 0.1),
    ),
    # Other tasks of PySlowFast (AVA detection, multigrid, masked / contrastive pre-training, the demo, mask
    # visualisation): their switches must stay off; their other keys are read only when on.
    *_only_default(
        "this project runs supervised classification only",
        ("DETECTION.ENABLE", False),
        ("MULTIGRID.LONG_CYCLE", False),
        ("MULTIGRID.SHORT_CYCLE", False),
        ("MASK.ENABLE", False),
        ("DEMO.ENABLE", False),
        ("VIS_MASK.ENABLE", False),
        ("TASK", ""),
    ),
    *_ignored(
        "options of tasks that are off",
        ("DETECTION.*", None),
        ("AVA.*", None),
        ("MULTIGRID.*", None),
        ("MASK.*", None),
        ("CONTRASTIVE.*", None),
        ("DEMO.*", None),
        ("VIS_MASK.*", None),
    ),
    # Logging, visualisation and tools: TensorBoard scalars are always written here (TRAIN.TENSORBOARD).
    *_ignored(
        "logging / visualisation / benchmark options",
        ("TENSORBOARD.*", None),
        ("BENCHMARK.*", None),
        ("LOG_MODEL_INFO", True),
    ),
]

# Shared keys where the publishers' files use a value spelled differently here: {key: ({theirs: ours}, why)}.
VALUE_ALIASES: Dict[str, Tuple[Dict[Any, Any], str]] = {
    # PySlowFast / mvit: a bool (fp16 autocast + GradScaler when True); here a precision name.
    "TRAIN.MIXED_PRECISION": ({True: "fp16", False: "fp32"}, "PySlowFast's True is fp16 autocast"),
    # torchvision 0.29 has no video decoder; PyAV decodes the same frames.
    "DATA.DECODING_BACKEND": ({"torchvision": "pyav"}, "decoded with PyAV"),
}

# A file that sets MODEL.ARCH (a key only PySlowFast has) is a PySlowFast config: the shared keys it leaves out
# mean PySlowFast's defaults, not ours. These are the ones that differ (slowfast/config/defaults.py); the lr is
# never scaled by the batch there (SOLVER.BASE_LR_BATCH_SIZE 0, now our default too; TRAIN.BATCH_SIZE is per
# machine in both). MVIT.POOL_KVQ_KERNEL None (kernels derived from the strides) has no spelling here and stays
# ours; every MViTv2 file sets it.
PYSLOWFAST_DEFAULTS: Dict[str, Any] = {
    "TRAIN.DATASET": "kinetics",
    "TRAIN.BATCH_SIZE": 64,
    "AUG.ENABLE": False,
    "AUG.AA_TYPE": "rand-m9-mstd0.5-inc1",
    "MIXUP.ENABLE": False,
    "TEST.DATASET": "kinetics",
    "TEST.BATCH_SIZE": 8,
    "TEST.NUM_ENSEMBLE_VIEWS": 10,
    "TEST.NUM_SPATIAL_CROPS": 3,
    "MODEL.NUM_CLASSES": 400,
    "MODEL.LOSS_FUNC": "cross_entropy",
    "MODEL.DROPOUT_RATE": 0.5,
    "MVIT.CLS_EMBED_ON": True,
    "MVIT.ZERO_DECAY_POS_CLS": True,
    "MVIT.PATCH_KERNEL": [3, 7, 7],
    "MVIT.PATCH_STRIDE": [2, 4, 4],
    "MVIT.PATCH_PADDING": [2, 4, 4],
    "MVIT.USE_ABS_POS": True,
    "MVIT.REL_POS_SPATIAL": False,
    "MVIT.RESIDUAL_POOLING": False,
    "MVIT.DIM_MUL_IN_ATT": False,
    "DATA.NUM_FRAMES": 8,
    "DATA.SAMPLING_RATE": 8,
    "DATA.MEAN": [0.45, 0.45, 0.45],
    "DATA.STD": [0.225, 0.225, 0.225],
    "DATA.TRAIN_JITTER_SCALES_RELATIVE": [],
    "DATA.TRAIN_JITTER_ASPECT_RELATIVE": [],
    "DATA.USE_OFFSET_SAMPLING": False,
    "DATA.TEST_CROP_SIZE": 256,
    "SOLVER.BASE_LR": 0.1,
    "SOLVER.BASE_LR_BATCH_SIZE": 0,
    "SOLVER.COSINE_END_LR": 0.0,
    "SOLVER.WEIGHT_DECAY": 1e-4,
    "SOLVER.WARMUP_EPOCHS": 0.0,
    "SOLVER.WARMUP_START_LR": 0.01,
    "SOLVER.OPTIMIZING_METHOD": "sgd",
    "SOLVER.COSINE_AFTER_WARMUP": False,
    "SOLVER.ZERO_WD_1D_PARAM": False,
    "SOLVER.CLIP_GRAD_L2NORM": None,
    "RNG_SEED": 1,
}

_LEAVES = {e.key: e for e in FOREIGN_KEYS if not e.key.endswith(".*")}
_SECTIONS = {e.key[:-2]: e for e in FOREIGN_KEYS if e.key.endswith(".*")}


def find_foreign_key(key: str) -> Optional[ForeignKey]:
    """The table's entry of a dotted key: its own row, or the row of a ``SECTION.*`` holding it; None if absent."""
    if key in _LEAVES:
        return _LEAVES[key]
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:n]) in _SECTIONS:
            return _SECTIONS[".".join(parts[:n])]
    return None
