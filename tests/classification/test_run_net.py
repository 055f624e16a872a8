"""tools/run_net.py end to end on a generated image tree: one process, two spawned processes, torchrun."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from mvit.checkpoint.state import load_training_state

CLASSES = ["circle", "square", "stripes"]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _last(records: list[dict], split: str) -> dict:
    return [r for r in records if r["split"] == split][-1]


def test_train_and_test_in_one_process(image_tree, tiny_cfg, run_net_main, tmp_path, run_net_argv):
    out = tmp_path / "out"
    argv = run_net_argv(tiny_cfg, image_tree, out, "TRAIN.TENSORBOARD", True, "TRAIN.EMA_ENABLE", True)
    assert run_net_main(argv) == 0

    records = _records(out)
    assert [r["epoch"] for r in records if r["split"] == "val"] == [1, 2]
    assert [r["epoch"] for r in records if r["split"] == "val_ema"] == [1, 2]
    assert any(r["split"] == "train" and "lr" in r and "loss" in r for r in records)
    # Testing last.pyth evaluates the weights the last validation saw (raw and EMA): the same numbers. (This run is
    # plumbing, 12 steps on 15 images; that training learns is asserted by the digits demo test.)
    for test_split, val_split in (("test", "val"), ("test_ema", "val_ema")):
        test, val = _last(records, test_split), _last(records, val_split)
        assert test["num_samples"] == val["num_samples"] == 15 and val["epoch"] == 2
        assert (test["top1"], test["top5"]) == (val["top1"], val["top5"])
        assert test["loss"] == pytest.approx(val["loss"], rel=1e-6)

    ckpts = out / "checkpoints"
    names = {p.name for p in ckpts.iterdir()}
    assert {"last.pyth", "best.pyth", "checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth"} <= names
    state = load_training_state(str(ckpts / "last.pyth"))
    assert (state["epoch"], state["iter"], state["step"]) == (2, 0, 12)
    assert state["class_names"] == CLASSES and "MVIT:" in state["cfg"]
    assert "ema" in state["hooks"] and state["optimizer"]["state"]
    assert (out / "curves.png").stat().st_size > 1000
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert "config.yaml" in {p.name for p in out.iterdir()}


def test_two_processes_train_with_ddp_and_reduce_metrics_like_one_process(image_tree, tiny_cfg, run_net, tmp_path):
    out2, out1 = tmp_path / "ddp", tmp_path / "single"
    data = ("DATA.PATH_TO_DATA_DIR", image_tree)
    # 15 val images over 2 processes (8 + 7, batches of 2): a padded or double-counted shard would show.
    done = run_net(tiny_cfg, *data, "OUTPUT_DIR", out2, "NUM_GPUS", 2, "INIT_METHOD", f"tcp://localhost:{_free_port()}")
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_training_state(str(out2 / "checkpoints" / "last.pyth"))
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    ddp = _last(_records(out2), "test")
    assert ddp["num_samples"] == 15

    weights = out2 / "checkpoints" / "last.pyth"
    single = run_net(tiny_cfg, *data, "OUTPUT_DIR", out1, "TRAIN.ENABLE", False, "TEST.CHECKPOINT_FILE_PATH", weights)
    assert single.returncode == 0, single.stderr[-3000:]
    one = _last(_records(out1), "test")
    assert (one["top1"], one["top5"], one["num_samples"]) == (ddp["top1"], ddp["top5"], ddp["num_samples"])
    assert one["loss"] == pytest.approx(ddp["loss"], rel=1e-5)
    # The last evaluation during training used the same weights and images.
    val = _last(_records(out2), "val")
    assert (val["top1"], val["top5"]) == (one["top1"], one["top5"])


def test_torchrun_environment_is_joined(image_tree, tiny_cfg, run_net, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    cmd += run_net.cmd(
        tiny_cfg, "DATA.PATH_TO_DATA_DIR", image_tree, "OUTPUT_DIR", out, "SOLVER.MAX_EPOCH", 1, "TEST.ENABLE", False
    )[1:]
    import subprocess

    done = subprocess.run(
        cmd, cwd=run_net.env["PYTHONPATH"], env=run_net.env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_training_state(str(out / "checkpoints" / "last.pyth"))
    assert state["world_size"] == 2 and state["epoch"] == 1
    assert torch.is_tensor(state["rng"][1]["torch"])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_pyslowfast_flags(image_tree, tiny_cfg, run_net_main, tmp_path):
    """Several --cfg files run in turn; --opts, --num_shards, --shard_id and --init_method set their keys."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_net_flags", Path(__file__).parents[2] / "tools" / "run_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.parse_args(
        ["--cfg", "a.yaml", "--cfg", "b.yaml", "--init_method", "tcp://node0:9999", "--num_shards", "4",
         "--shard_id", "3", "--opts", "SOLVER.BASE_LR", "0.5"]
    )  # fmt: skip
    assert args.cfg_files == ["a.yaml", "b.yaml"]
    assert args.opts == ["SOLVER.BASE_LR", "0.5", "INIT_METHOD", "tcp://node0:9999", "NUM_SHARDS", "4", "SHARD_ID", "3"]

    configs = []
    for name in ("first", "second"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(Path(tiny_cfg).read_text() + f"OUTPUT_DIR: {tmp_path / name}\n")
        configs += ["--cfg", str(path)]
    common = ["DATA.PATH_TO_DATA_DIR", str(image_tree), "SOLVER.MAX_EPOCH", "1", "TEST.ENABLE", "False"]
    assert run_net_main([*configs, "--stop-signals", "none", "--opts", *common]) == 0
    for name in ("first", "second"):
        assert (tmp_path / name / "checkpoints" / "last.pyth").is_file(), name
