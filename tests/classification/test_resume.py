"""Kill / preempt a run_net training and start the same command again: the final weights are exact."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch

from mvit.checkpoint.state import load_training_state
from mvit.errors import CheckpointError
from mvit.runtime.preemption import PREEMPTED_EXIT_CODE

# Mixup, RandAugment, random erasing, drop path and EMA all on; one persistent loader worker; a checkpoint
# every step so that a kill lands between two of them.
OPTS = (
    "SOLVER.MAX_EPOCH",
    4,
    "TRAIN.BATCH_SIZE",
    2,
    "TRAIN.CHECKPOINT_ITER_PERIOD",
    1,
    "TRAIN.EMA_ENABLE",
    True,
    "TRAIN.EMA_DECAY",
    0.9,
    "DATA_LOADER.NUM_WORKERS",
    1,
    "TEST.ENABLE",
    False,
    "TRAIN.EVAL_PERIOD",
    2,
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, helpers):
    """An uninterrupted run: (data, config, its final training state)."""
    root = tmp_path_factory.mktemp("resume")
    data = helpers.make_image_tree(root / "data")
    cfg = root / "tiny.yaml"
    cfg.write_text(helpers.tiny_yaml)
    done = helpers.RunNet()(cfg, "DATA.PATH_TO_DATA_DIR", data, "OUTPUT_DIR", root / "ref", *OPTS)
    assert done.returncode == 0, done.stderr[-3000:]
    return data, cfg, load_training_state(str(root / "ref" / "checkpoints" / "last.pyth"))


def _wait_for_mid_epoch_checkpoint(path: Path, proc, timeout: float = 180) -> dict:
    """Poll until the running job has saved a state inside an epoch after the first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        if path.exists():
            try:
                state = load_training_state(str(path))
            except CheckpointError:  # replaced between the existence check and the read
                continue
            if state["epoch"] >= 1 and 0 < state["iter"]:
                return state
        time.sleep(0.005)  # polling interval, not a synchronisation
    raise AssertionError("no mid-epoch checkpoint appeared")


def _assert_same_final_state(a: dict, b: dict) -> None:
    assert (a["epoch"], a["iter"], a["step"]) == (b["epoch"], b["iter"], b["step"])
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    for name, value in a["hooks"]["ema"]["model"].items():
        assert torch.equal(value, b["hooks"]["ema"]["model"][name]), f"ema {name}"
    for key, value in a["optimizer"]["state"].items():
        assert torch.equal(value["exp_avg"], b["optimizer"]["state"][key]["exp_avg"])


@pytest.mark.parametrize("how", ["sigkill", "sigusr1"])
def test_interrupted_run_restarted_with_the_same_command_ends_with_the_same_weights(reference, run_net, tmp_path, how):
    data, cfg, final = reference
    out = tmp_path / "out"
    opts = ("DATA.PATH_TO_DATA_DIR", data, "OUTPUT_DIR", out, *OPTS)
    proc = run_net.popen(cfg, *opts, log=tmp_path / "first.log")
    try:
        _wait_for_mid_epoch_checkpoint(out / "checkpoints" / "last.pyth", proc)
        if how == "sigkill":
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        else:  # a scheduler's warning signal: checkpoint at the next step, exit 75
            proc.send_signal(signal.SIGUSR1)
            assert proc.wait(timeout=120) == PREEMPTED_EXIT_CODE, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped = load_training_state(str(out / "checkpoints" / "last.pyth"))
    assert stopped["step"] < final["step"]
    if how == "sigusr1":
        assert "stop requested" in (tmp_path / "first.log").read_text()

    again = run_net(cfg, *opts)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in (out / "log.txt").read_text()
    _assert_same_final_state(final, load_training_state(str(out / "checkpoints" / "last.pyth")))


def test_truncated_newest_checkpoint_is_skipped_in_favour_of_the_previous(
    image_tree, tiny_cfg, run_net_main, tmp_path, run_net_argv
):
    out = tmp_path / "out"
    argv = run_net_argv(tiny_cfg, image_tree, out, "TEST.ENABLE", False)
    assert run_net_main(argv) == 0
    last = out / "checkpoints" / "last.pyth"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])

    assert run_net_main([*argv, "SOLVER.MAX_EPOCH", "3"]) == 0
    log = (out / "log.txt").read_text()
    assert "skipping checkpoint" in log and "last.pyth" in log
    assert "at epoch 2 iteration 0" in log
    assert load_training_state(str(last))["epoch"] == 3
