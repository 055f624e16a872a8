"""TRAIN.BATCH_SIZE means what it means in PySlowFast and facebookresearch/mvit: the batch of one machine.

PySlowFast's ``construct_loader`` gives each process ``TRAIN.BATCH_SIZE / max(1, NUM_GPUS)`` items (each giving
``AUG.NUM_SAMPLE`` rows), so the global batch is ``TRAIN.BATCH_SIZE x NUM_SHARDS``; ``assert_and_infer_cfg``
multiplies BASE_LR, WARMUP_START_LR and COSINE_END_LR by ``NUM_SHARDS`` when ``SOLVER.BASE_LR_SCALE_NUM_SHARDS``.
The expected numbers below are those two rules, applied to the publishers' files and to ours.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mvit.config import load_config
from mvit.engine.batch import adopt_launcher_layout, batch_layout
from mvit.engine.lr_schedule import build_lr_schedule
from mvit.errors import ConfigError
from mvit.runtime.projects import load_projects
from mvit.runtime.submit import get_args_parser, load_script, submit

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL = ROOT / "tests" / "config_compat" / "official"
# Ours and the publishers' file of the same recipe.
RECIPES = {
    "K400 S": ("configs/K400/MVITv2_S_16x4.yaml", OFFICIAL / "pysf_Kinetics_MVITv2_S_16x4.yaml"),
    "IN1K B": ("configs/IN1K/MVITv2_B.yaml", OFFICIAL / "pysf_ImageNet_MVITv2_T.yaml"),  # its B file is not YAML
}

load_script(str(ROOT / "tools" / "submit.py"))  # registers the run_net launch target


@pytest.fixture(scope="module")
def extensions():
    return load_projects(("projects.classification", "projects.video"))[1]


def _pyslowfast(cfg, shards: int) -> tuple[int, int, int, float, float, float]:
    """(global items, items per GPU, rows per GPU, lr, warmup start lr, end lr) by PySlowFast's rules."""
    per_gpu = int(cfg.TRAIN.BATCH_SIZE / max(1, cfg.NUM_GPUS))
    scale = shards if cfg.SOLVER.BASE_LR_SCALE_NUM_SHARDS else 1
    s = cfg.SOLVER
    return (
        cfg.TRAIN.BATCH_SIZE * shards,
        per_gpu,
        per_gpu * cfg.AUG.NUM_SAMPLE,
        s.BASE_LR * scale,
        s.WARMUP_START_LR * scale,
        s.COSINE_END_LR * scale,
    )


def _ours(cfg) -> tuple[int, int, int, float, float, float]:
    layout, schedule = batch_layout(cfg), build_lr_schedule(cfg)
    return (
        layout.global_batch,
        layout.per_process,
        layout.rows,
        schedule.base_lr,
        schedule.warmup_start_lr,
        schedule.end_lr,
    )


@pytest.mark.parametrize("shards", [1, 2, 8])
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_config_arithmetic_for_1_2_and_8_machines(recipe, shards, extensions):
    ours_path, theirs_path = RECIPES[recipe]
    opts = ["NUM_GPUS", "8", "NUM_SHARDS", str(shards)]
    ours = load_config(str(ROOT / ours_path), opts, extensions=extensions)
    theirs = load_config(str(theirs_path), opts, extensions=extensions)
    # The publisher's file means the same numbers here as there, and ours states the same recipe.
    assert _ours(theirs) == pytest.approx(_pyslowfast(theirs, shards), rel=1e-12)
    assert _ours(ours) == pytest.approx(_ours(theirs), rel=1e-12)
    expected = {"K400 S": (16, 2, 4, 1e-4), "IN1K B": (256, 32, 32, 2.5e-4)}[recipe]
    global_batch, per_process, rows, lr = _ours(ours)[:4]
    assert (global_batch, per_process, rows) == (expected[0] * shards, expected[1], expected[2])
    assert lr == pytest.approx(expected[3] * shards, rel=1e-12)


@pytest.mark.parametrize("shards", [1, 8])
@pytest.mark.parametrize(
    "name",
    [
        "mvit_MVITv2_T.yaml",
        "pysf_ImageNet_MVITv2_T.yaml",
        "pysf_Kinetics_MVITv2_S_16x4.yaml",
        "pysf_SSv2_MVITv2_S_16x4.yaml",
    ],
)
def test_official_files_mean_the_publishers_numbers(name, shards, extensions):
    # facebookresearch/mvit's files set no MODEL.ARCH: our defaults apply, and they must not scale the lr again.
    cfg = load_config(str(OFFICIAL / name), ["NUM_SHARDS", str(shards)], extensions=extensions)
    assert _ours(cfg) == pytest.approx(_pyslowfast(cfg, shards), rel=1e-12)


def test_batch_that_does_not_divide_names_the_keys(extensions):
    cfg = load_config(str(ROOT / RECIPES["K400 S"][0]), ["NUM_GPUS", "6"], extensions=extensions)
    with pytest.raises(ConfigError) as err:
        batch_layout(cfg)
    assert str(err.value) == (
        "TRAIN.BATCH_SIZE 16 (the batch of one machine) must divide among NUM_GPUS 6 process(es) x "
        "TRAIN.GRAD_ACCUM_STEPS 1: use a multiple of 6"
    )
    cfg = load_config(str(ROOT / RECIPES["K400 S"][0]), ["NUM_GPUS", "2", "SHARD_ID", "1"], extensions=extensions)
    with pytest.raises(ConfigError, match=r"SHARD_ID must be in \[0, NUM_SHARDS - 1\] = \[0, 0\], got 1"):
        batch_layout(cfg)


def test_accumulation_divides_the_batch_of_a_process(extensions):
    opts = ["NUM_GPUS", "4", "TRAIN.GRAD_ACCUM_STEPS", "2", "TRAIN.BATCH_SIZE", "32"]
    layout = batch_layout(load_config(str(ROOT / RECIPES["K400 S"][0]), opts, extensions=extensions))
    assert (layout.per_process, layout.micro_batch, layout.rows, layout.global_batch) == (8, 4, 8, 32)


def _submit_args(*argv: str):
    parser = get_args_parser(default_target="run_net")
    return parser.parse_args(["--job-dir", "/tmp/unused-job", "--cluster", "local", *argv])


def test_submit_8_nodes_of_8_gpus_k400_passes_the_batch_checks(caplog):
    # The local executor refuses several nodes, but only after every check of the config has passed.
    cfg = str(ROOT / RECIPES["K400 S"][0])
    with caplog.at_level(logging.INFO), pytest.raises(ValueError, match="--nodes 8 needs SLURM"):
        submit(_submit_args("--cfg", cfg, "--nodes", "8", "--gpus-per-node", "8"))
    assert "batch: 128 items per step = TRAIN.BATCH_SIZE 16 per machine x 8 machine(s)" in caplog.text
    with pytest.raises(ConfigError) as err:
        submit(_submit_args("--cfg", cfg, "--nodes", "8", "--gpus-per-node", "8", "TRAIN.BATCH_SIZE", "12"))
    assert "TRAIN.BATCH_SIZE 12 (the batch of one machine) must divide among NUM_GPUS 8" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_launchers_layout_is_adopted_and_a_mismatch_is_one_line(monkeypatch, extensions):
    cfg = load_config(str(ROOT / RECIPES["IN1K B"][0]), extensions=extensions)  # NUM_GPUS 1, NUM_SHARDS 1
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert adopt_launcher_layout(cfg, 1, 0) is cfg
    with pytest.raises(ConfigError, match="this job has 16 process\\(es\\) but NUM_GPUS 1 x NUM_SHARDS 1 means 1"):
        adopt_launcher_layout(cfg, 16, 0)
    # torchrun --nnodes 2 --nproc_per_node 8: rank 11 is the 4th process of the second machine.
    monkeypatch.setenv("RANK", "11")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    adopted = adopt_launcher_layout(cfg, 16, 11)
    assert (adopted.NUM_GPUS, adopted.NUM_SHARDS, adopted.SHARD_ID) == (8, 2, 1)
    assert batch_layout(adopted).global_batch == 512 and batch_layout(adopted).per_process == 32


def test_mixup_that_mixes_nothing_needs_no_even_batch_and_trains_the_same(extensions):
    """SSv2 L on 8 GPUs: 8 clips per machine is 1 per GPU; MIXUP.PROB 0 only smooths labels, which the loss does
    for hard labels, so the odd micro-batch is allowed and the loss equals timm's mixup targets' loss."""
    import torch
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    from mvit.engine.trainer import build_criterion, build_mixup

    cfg = load_config(str(ROOT / "configs/SSv2/MVITv2_L_40x3.yaml"), ["NUM_GPUS", "8"], extensions=extensions)
    assert batch_layout(cfg).per_process == 1
    assert build_mixup(cfg) is None
    logits, labels = torch.randn(2, cfg.MODEL.NUM_CLASSES), torch.tensor([3, 7])
    timm_mixup = Mixup(prob=0.0, label_smoothing=cfg.MIXUP.LABEL_SMOOTH_VALUE, num_classes=cfg.MODEL.NUM_CLASSES)
    _, soft = timm_mixup(torch.zeros(2, 1), labels)
    expected = SoftTargetCrossEntropy()(logits, soft)
    torch.testing.assert_close(build_criterion(cfg, soft_targets=False)(logits, labels), expected)
    mixing = load_config(
        str(ROOT / "configs/SSv2/MVITv2_L_40x3.yaml"), ["NUM_GPUS", "8", "MIXUP.PROB", "1.0"], extensions=extensions
    )
    with pytest.raises(ConfigError, match="even"):
        batch_layout(mixing)
