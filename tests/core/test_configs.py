"""Shipped yaml configs describe exactly the zoo architectures and the official recipes; _BASE_ inheritance,
overrides and ``MVIT.ARCH`` work."""

from pathlib import Path

import pytest

from mvit import resolve_config
from mvit.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PAIRS = [
    ("IN1K/MVITv2_T.yaml", "mvitv2_t"),
    ("IN1K/MVITv2_S.yaml", "mvitv2_s"),
    ("IN1K/MVITv2_B.yaml", "mvitv2_b"),
    ("IN1K/MVITv2_L.yaml", "mvitv2_l"),
    ("IN1K/MVITv2_H.yaml", "mvitv2_h"),
    ("K400/MVITv2_S_16x4.yaml", "mvitv2_s_16x4"),
    ("K400/MVITv2_B_32x3.yaml", "mvitv2_b_32x3"),
    ("K400/MVITv2_L_40x3.yaml", "mvitv2_l_40x3"),
]

# The recipe keys of the shipped yamls as they were written out in full before they became _BASE_ + ARCH.
_IN1K = {
    "MODEL.NUM_CLASSES": 1000, "MODEL.DROPOUT_RATE": 0.0, "MODEL.ACT_CHECKPOINT": False,
    "TRAIN.DATASET": "imagenet", "TRAIN.BATCH_SIZE": 256, "TRAIN.EVAL_PERIOD": 10, "TRAIN.CHECKPOINT_PERIOD": 10,
    "TRAIN.MIXED_PRECISION": "bf16", "TEST.DATASET": "imagenet", "TEST.BATCH_SIZE": 256,
    "DATA.NUM_FRAMES": 1, "DATA.TRAIN_CROP_SIZE": 224, "DATA.TEST_CROP_SIZE": 224, "DATA.VAL_CROP_RATIO": 0.875,
    "DATA.MEAN": [0.485, 0.456, 0.406], "DATA.STD": [0.229, 0.224, 0.225],
    "AUG.NUM_SAMPLE": 1, "AUG.AA_TYPE": "rand-m9-n6-mstd0.5-inc1", "AUG.INTERPOLATION": "bicubic", "AUG.RE_PROB": 0.25,
    "MIXUP.ALPHA": 0.8, "MIXUP.CUTMIX_ALPHA": 1.0, "MIXUP.SWITCH_PROB": 0.5, "MIXUP.LABEL_SMOOTH_VALUE": 0.1,
    "SOLVER.OPTIMIZING_METHOD": "adamw", "SOLVER.BASE_LR": 0.00025, "SOLVER.BASE_LR_SCALE_NUM_SHARDS": True,
    "SOLVER.BASE_LR_BATCH_SIZE": 0, "SOLVER.WEIGHT_DECAY": 0.05,
    "SOLVER.LR_POLICY": "cosine", "SOLVER.MAX_EPOCH": 300, "SOLVER.WARMUP_EPOCHS": 70.0,
    "SOLVER.WARMUP_START_LR": 1e-08, "SOLVER.COSINE_END_LR": 1e-06, "SOLVER.CLIP_GRAD_L2NORM": 1.0,
}  # fmt: skip
_K400 = {
    "MODEL.NUM_CLASSES": 400, "MODEL.DROPOUT_RATE": 0.5, "TRAIN.DATASET": "kinetics", "TRAIN.BATCH_SIZE": 16,
    "TRAIN.EVAL_PERIOD": 10, "TRAIN.CHECKPOINT_PERIOD": 10, "TRAIN.MIXED_PRECISION": "bf16",
    "TEST.DATASET": "kinetics", "TEST.BATCH_SIZE": 64, "TEST.NUM_ENSEMBLE_VIEWS": 5, "TEST.ENSEMBLE_METHOD": "sum",
    "DATA.TARGET_FPS": 30, "DATA.TRAIN_JITTER_SCALES_RELATIVE": [0.08, 1.0],
    "DATA.TRAIN_JITTER_ASPECT_RELATIVE": [0.75, 1.3333], "DATA.RANDOM_FLIP": True, "DATA.USE_OFFSET_SAMPLING": True,
    "DATA.TEST_SHORT_SIDE": 0, "DATA.DECODING_BACKEND": "pyav",
    "AUG.NUM_SAMPLE": 2, "AUG.AA_TYPE": "rand-m7-n4-mstd0.5-inc1", "AUG.INTERPOLATION": "bicubic", "AUG.RE_PROB": 0.25,
    "MIXUP.ALPHA": 0.8, "MIXUP.CUTMIX_ALPHA": 1.0, "MIXUP.SWITCH_PROB": 0.5, "MIXUP.LABEL_SMOOTH_VALUE": 0.1,
    "SOLVER.OPTIMIZING_METHOD": "adamw", "SOLVER.BASE_LR": 0.0001, "SOLVER.BASE_LR_BATCH_SIZE": 0,
    "SOLVER.BASE_LR_SCALE_NUM_SHARDS": True, "SOLVER.WEIGHT_DECAY": 0.05, "SOLVER.LR_POLICY": "cosine",
    "SOLVER.MAX_EPOCH": 200, "SOLVER.WARMUP_EPOCHS": 30.0, "SOLVER.WARMUP_START_LR": 1e-06,
    "SOLVER.COSINE_END_LR": 1e-06, "SOLVER.CLIP_GRAD_L2NORM": 1.0,
}  # fmt: skip
_K400_SB = {"DATA.TRAIN_CROP_SIZE": 224, "DATA.TEST_CROP_SIZE": 224, "DATA.MEAN": [0.45, 0.45, 0.45],
            "DATA.STD": [0.225, 0.225, 0.225], "DATA.TRAIN_JITTER_SCALES": [256, 320],
            "MODEL.ACT_CHECKPOINT": False, "TEST.NUM_SPATIAL_CROPS": 1}  # fmt: skip
RECIPES = {
    "IN1K/MVITv2_T.yaml": {**_IN1K, "MVIT.DROPPATH_RATE": 0.1},
    "IN1K/MVITv2_S.yaml": {**_IN1K, "MVIT.DROPPATH_RATE": 0.1},
    "IN1K/MVITv2_B.yaml": {**_IN1K, "MVIT.DROPPATH_RATE": 0.3},
    "IN1K/MVITv2_L.yaml": {**_IN1K, "MVIT.DROPPATH_RATE": 0.5},
    "IN1K/MVITv2_H.yaml": {**_IN1K, "MVIT.DROPPATH_RATE": 0.8},
    "K400/MVITv2_S_16x4.yaml": {**_K400, **_K400_SB, "MVIT.DROPPATH_RATE": 0.2, "DATA.NUM_FRAMES": 16,
                                "DATA.SAMPLING_RATE": 4},
    "K400/MVITv2_B_32x3.yaml": {**_K400, **_K400_SB, "MVIT.DROPPATH_RATE": 0.3, "DATA.NUM_FRAMES": 32,
                                "DATA.SAMPLING_RATE": 3},
    "K400/MVITv2_L_40x3.yaml": {**_K400, "MVIT.DROPPATH_RATE": 0.75, "DATA.NUM_FRAMES": 40, "DATA.SAMPLING_RATE": 3,
                                "DATA.TRAIN_CROP_SIZE": 312, "DATA.TEST_CROP_SIZE": 312,
                                "DATA.MEAN": [0.485, 0.456, 0.406], "DATA.STD": [0.229, 0.224, 0.225],
                                "DATA.TRAIN_JITTER_SCALES": [356, 446], "MODEL.ACT_CHECKPOINT": True,
                                "TEST.NUM_SPATIAL_CROPS": 3},
}  # fmt: skip


def _experiment_cfg(path: str):
    """The config run_net builds: core defaults, both projects' keys, the yaml."""
    from projects.classification.config import add_classification_config
    from projects.video.config import add_video_config

    return load_config(str(CONFIGS / path), extensions=[add_classification_config, add_video_config])


@pytest.mark.parametrize("path, name", PAIRS)
def test_yaml_equals_zoo_architecture(path, name):
    from_yaml = resolve_config(str(CONFIGS / path))
    zoo = resolve_config(name)
    assert from_yaml.block_specs() == zoo.block_specs()
    for field in ("input_size", "patch_kernel", "cls_embed_on", "rel_pos_temporal", "num_classes", "head_dropout"):
        assert getattr(from_yaml, field) == getattr(zoo, field), field


@pytest.mark.parametrize("path", sorted(RECIPES))
def test_yaml_recipe_is_the_official_one(path):
    cfg = _experiment_cfg(path)
    for dotted, expected in RECIPES[path].items():
        section, key = dotted.split(".")
        value = cfg[section][key]
        assert (list(value) if isinstance(value, tuple) else value) == expected, dotted


@pytest.mark.parametrize(
    "path", sorted(p.relative_to(CONFIGS).as_posix() for d in ("IN1K", "K400") for p in (CONFIGS / d).glob("*.yaml"))
)
def test_shipped_yamls_are_short(path):
    # A recipe is its _BASE_, a zoo name and what differs; the architecture lives once, in the zoo.
    assert len((CONFIGS / path).read_text().splitlines()) < 30


def test_base_inheritance_and_overrides(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"_BASE_: {CONFIGS / 'IN1K/MVITv2_T.yaml'}\nMODEL:\n  NUM_CLASSES: 10\n")
    cfg = load_config(str(child), ["SOLVER.BASE_LR", "0.5"])
    assert cfg.MODEL.NUM_CLASSES == 10 and cfg.SOLVER.BASE_LR == 0.5 and cfg.MVIT.DEPTH == 10
    assert resolve_config(cfg).num_classes == 10


# PySlowFast's configs/SSv2/MVITv2_{S_16x4,B_32x3,L_40x3}.yaml, key by key (keys of no effect here left out).
_SSV2 = {
    "MODEL.NUM_CLASSES": 174, "MODEL.DROPOUT_RATE": 0.5, "MODEL.LOSS_FUNC": "soft_cross_entropy",
    "TRAIN.DATASET": "ssv2", "TRAIN.EVAL_PERIOD": 2, "TEST.DATASET": "ssv2", "TEST.NUM_ENSEMBLE_VIEWS": 1,
    "TEST.NUM_SPATIAL_CROPS": 3, "DATA.INV_UNIFORM_SAMPLE": True, "DATA.RANDOM_FLIP": False,
    "DATA.REVERSE_INPUT_CHANNEL": True, "DATA.TRAIN_JITTER_SCALES_RELATIVE": [], "AUG.NUM_SAMPLE": 1,
    "AUG.AA_TYPE": "rand-m7-n4-mstd0.5-inc1", "AUG.COLOR_JITTER": 0.4, "AUG.RE_PROB": 0.25, "MIXUP.ALPHA": 0.8,
    "MIXUP.CUTMIX_ALPHA": 1.0, "MIXUP.LABEL_SMOOTH_VALUE": 0.1, "SOLVER.OPTIMIZING_METHOD": "sgd",
    "SOLVER.MOMENTUM": 0.9, "SOLVER.WEIGHT_DECAY": 1e-4, "SOLVER.LR_POLICY": "cosine", "SOLVER.WARMUP_EPOCHS": 3.0,
    "SOLVER.COSINE_END_LR": 1e-6, "SOLVER.BASE_LR_SCALE_NUM_SHARDS": True, "SOLVER.BASE_LR_BATCH_SIZE": 0,
    "SOLVER.ZERO_WD_1D_PARAM": True, "MVIT.ZERO_DECAY_POS_CLS": False,
}  # fmt: skip
_SSV2_SB = {"TRAIN.BATCH_SIZE": 16, "TRAIN.CHECKPOINT_PERIOD": 2, "TEST.BATCH_SIZE": 64, "DATA.TRAIN_CROP_SIZE": 224,
            "DATA.TEST_CROP_SIZE": 224, "DATA.TRAIN_JITTER_SCALES": [256, 320], "DATA.MEAN": [0.45, 0.45, 0.45],
            "DATA.STD": [0.225, 0.225, 0.225], "MIXUP.PROB": 1.0, "SOLVER.MAX_EPOCH": 100,
            "SOLVER.WARMUP_START_LR": 1e-4, "SOLVER.CLIP_GRAD_L2NORM": 0.0, "MVIT.DROPPATH_RATE": 0.4,
            "MODEL.ACT_CHECKPOINT": False}  # fmt: skip
SSV2 = {
    "SSv2/MVITv2_S_16x4.yaml": ("mvitv2_s_16x4", 34_363_950, {**_SSV2, **_SSV2_SB, "DATA.NUM_FRAMES": 16,
                                "DATA.SAMPLING_RATE": 4, "SOLVER.BASE_LR": 0.0025}),
    "SSv2/MVITv2_B_32x3.yaml": ("mvitv2_b_32x3", 51_056_334, {**_SSV2, **_SSV2_SB, "DATA.NUM_FRAMES": 32,
                                "DATA.SAMPLING_RATE": 3, "SOLVER.BASE_LR": 0.0015}),
    "SSv2/MVITv2_L_40x3.yaml": ("mvitv2_l_40x3", 213_129_534, {
        **_SSV2, "TRAIN.BATCH_SIZE": 8, "TRAIN.CHECKPOINT_PERIOD": 1, "TEST.BATCH_SIZE": 8, "DATA.NUM_FRAMES": 40,
        "DATA.SAMPLING_RATE": 3, "DATA.TRAIN_CROP_SIZE": 312, "DATA.TEST_CROP_SIZE": 312,
        "DATA.TRAIN_JITTER_SCALES": [356, 446], "DATA.MEAN": [0.485, 0.456, 0.406], "DATA.STD": [0.229, 0.224, 0.225],
        "MIXUP.PROB": 0.0, "SOLVER.BASE_LR": 0.00125, "SOLVER.MAX_EPOCH": 40, "SOLVER.WARMUP_START_LR": 1e-6,
        "SOLVER.CLIP_GRAD_L2NORM": 2.0, "MVIT.DROPPATH_RATE": 0.75, "MODEL.ACT_CHECKPOINT": True}),
}  # fmt: skip


@pytest.mark.parametrize("path", sorted(SSV2))
def test_ssv2_yaml_is_pyslowfasts_recipe_on_the_zoo_architecture(path):
    import torch

    from mvit.models import MViT

    name, num_params, recipe = SSV2[path]
    cfg = _experiment_cfg(path)
    for dotted, expected in recipe.items():
        section, key = dotted.split(".")
        value = cfg[section][key]
        assert (list(value) if isinstance(value, tuple) else value) == expected, dotted
    config = resolve_config(cfg)
    zoo = resolve_config(name, drop_path_rate=recipe["MVIT.DROPPATH_RATE"])
    assert config.block_specs() == zoo.block_specs() and config.num_classes == 174
    with torch.device("meta"):
        count = sum(p.numel() for p in MViT(config).parameters())
    # The K400 model (its count is asserted against torchvision / PySlowFast) with a 174-class head.
    k400 = resolve_config(name)
    head_dim = k400.block_specs()[-1].dim_out
    assert count == num_params == sum(p.numel() for p in MViT(k400).parameters()) - (400 - 174) * (head_dim + 1)


# What each recipe means at the layout its models were trained on (TRAIN.BATCH_SIZE is per machine, as in
# PySlowFast): NUM_GPUS, NUM_SHARDS -> items per optimizer step over all machines, items and model rows per process,
# and the scheduled lr (peak, warmup start, cosine end). IN1K: 8 machines of 8 GPUs, batch 2048, lr 2e-3, as the
# recipe gave when TRAIN.BATCH_SIZE was the global batch; the video recipes: PySlowFast's files (one machine).
_IN1K_RUN = ((8, 8), (2048, 32, 32, 2e-3, 8e-8, 8e-6))
_K400_RUN = ((8, 1), (16, 2, 4, 1e-4, 1e-6, 1e-6))  # 2 clips per GPU, 2 augmented copies each
EFFECTIVE = {
    **{f"IN1K/MVITv2_{size}.yaml": _IN1K_RUN for size in "TSBLH"},
    **{f"K400/{name}.yaml": _K400_RUN for name in ("MVITv2_S_16x4", "MVITv2_B_32x3", "MVITv2_L_40x3")},
    "SSv2/MVITv2_S_16x4.yaml": ((8, 1), (16, 2, 2, 2.5e-3, 1e-4, 1e-6)),
    "SSv2/MVITv2_B_32x3.yaml": ((8, 1), (16, 2, 2, 1.5e-3, 1e-4, 1e-6)),
    # PySlowFast: 8 GPUs x 1 clip; timm's mixup pairs rows, so 4 processes x 2 here (same global batch and lr).
    "SSv2/MVITv2_L_40x3.yaml": ((4, 1), (8, 2, 2, 1.25e-3, 1e-6, 1e-6)),
    "DEMO/MVITv2_digits.yaml": ((1, 1), (64, 64, 64, 1e-3, 2.5e-9, 2.5e-7)),
    "DEMO/video_motion.yaml": ((1, 1), (32, 32, 32, 2e-3, 1e-8, 1e-6)),
    "DEMO/video_motion_frames.yaml": ((1, 1), (32, 32, 32, 2e-3, 1e-8, 1e-6)),
}


def test_every_shipped_recipe_is_in_the_effective_numbers_table():
    shipped = {p.relative_to(CONFIGS).as_posix() for p in CONFIGS.glob("*/*.yaml") if p.name != "base.yaml"}
    assert shipped == set(EFFECTIVE)


@pytest.mark.parametrize("path", sorted(EFFECTIVE))
def test_recipe_means_the_same_batch_and_lr(path):
    from mvit.engine.batch import batch_layout
    from mvit.engine.lr_schedule import build_lr_schedule
    from projects.classification.config import add_classification_config
    from projects.video.config import add_video_config

    (gpus, shards), (global_batch, per_process, rows, lr, warmup_lr, end_lr) = EFFECTIVE[path]
    cfg = load_config(
        str(CONFIGS / path),
        ["NUM_GPUS", str(gpus), "NUM_SHARDS", str(shards)],
        extensions=[add_classification_config, add_video_config],
    )
    layout = batch_layout(cfg)
    assert (layout.global_batch, layout.per_process, layout.rows) == (global_batch, per_process, rows)
    schedule = build_lr_schedule(cfg)
    assert schedule.base_lr == pytest.approx(lr, rel=1e-9)
    assert schedule.warmup_start_lr == pytest.approx(warmup_lr, rel=1e-9)
    assert schedule.end_lr == pytest.approx(end_lr, rel=1e-9)
