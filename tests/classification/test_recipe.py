"""Recipe options through run_net: bf16, activation checkpointing, accumulation, layer decay, repeated
augmentation; fine-tuning from a checkpoint with a head of another size."""

from __future__ import annotations

import json

import torch

from mvit.checkpoint.state import load_training_state


def test_every_recipe_option_at_once_trains_and_tests(image_tree, tiny_cfg, run_net_main, tmp_path, run_net_argv):
    out = tmp_path / "out"
    opts = (
        "TRAIN.MIXED_PRECISION",
        "bf16",
        "MODEL.ACT_CHECKPOINT",
        True,
        "TRAIN.GRAD_ACCUM_STEPS",
        2,
        "TRAIN.BATCH_SIZE",
        8,
        "SOLVER.LAYER_DECAY",
        0.75,
        "AUG.NUM_SAMPLE",
        2,
        "TRAIN.EMA_ENABLE",
        True,
        "TRAIN.EMA_WARMUP",
        True,
        "SOLVER.MAX_EPOCH",
        1,
    )
    assert run_net_main(run_net_argv(tiny_cfg, image_tree, out, *opts)) == 0
    state = load_training_state(str(out / "checkpoints" / "last.pyth"))
    # 24 images, steps of 8 images (TRAIN.BATCH_SIZE counts items, as in PySlowFast) = 2 micro-batches of 4 images
    # x 2 views = 8 rows: 3 steps
    assert (state["epoch"], state["step"]) == (1, 3)
    assert len({g["lr_scale"] for g in state["optimizer"]["param_groups"]}) > 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"val", "val_ema", "test", "test_ema"} <= {r["split"] for r in records}


def test_fine_tuning_loads_the_backbone_and_replaces_the_head(
    image_tree, tiny_cfg, run_net_main, tmp_path, run_net_argv
):
    src = tmp_path / "src"
    assert run_net_main(run_net_argv(tiny_cfg, image_tree, src, "SOLVER.MAX_EPOCH", 1, "TEST.ENABLE", False)) == 0
    weights = src / "checkpoints" / "last.pyth"
    dst = tmp_path / "dst"
    # lr 0 everywhere: after training, the weights are exactly what the fine-tuning run started from.
    opts = (
        "TRAIN.CHECKPOINT_FILE_PATH",
        weights,
        "MODEL.NUM_CLASSES",
        5,
        "SOLVER.BASE_LR",
        0.0,
        "SOLVER.WARMUP_START_LR",
        0.0,
        "SOLVER.COSINE_END_LR",
        0.0,
        "SOLVER.MAX_EPOCH",
        1,
        "TEST.ENABLE",
        False,
    )
    assert run_net_main(run_net_argv(tiny_cfg, image_tree, dst, *opts)) == 0
    before = load_training_state(str(weights))["model"]
    after = load_training_state(str(dst / "checkpoints" / "last.pyth"))["model"]
    assert after["head.projection.weight"].shape[0] == 5 and before["head.projection.weight"].shape[0] == 3
    for name, value in before.items():
        if not name.startswith("head."):
            assert torch.equal(value, after[name]), name
    assert "head.projection.weight" in (dst / "log.txt").read_text()  # reported as left at initial values


def test_rand_augment_survives_its_maximum_magnitude():
    import numpy as np
    from PIL import Image
    from timm.data.auto_augment import RandAugment

    from mvit.config import load_config
    from projects.classification import add_classification_config
    from projects.classification.data import build_transform

    cfg = load_config(None, ["DATA.TRAIN_CROP_SIZE", "32"], extensions=[add_classification_config])
    transform = build_transform(cfg, is_training=True)
    rand_augment = next(t for t in transform.transforms if isinstance(t, RandAugment))
    image = Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype("uint8"))
    for op in rand_augment.ops:
        op.magnitude, op.magnitude_std = 10.0, 0.0  # the largest magnitude sampling can draw
        op.prob = 1.0
        op(image)
