"""One training run per OUTPUT_DIR: the lock file, its refusal, stale locks, and release after a run."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from mvit.data.registry import register_dataset
from mvit.engine import hooks as H
from mvit.engine import runner
from mvit.errors import UserError, report
from mvit.runtime.lock import LOCK_NAME, OutputDirLock, OutputDirLocked

from .conftest import NoisyImages, TinyNet, small_cfg


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def lock_warnings(caplog, monkeypatch):
    # runner.train's logging set-up may have stopped propagation of the "mvit" logger; caplog listens at the root.
    monkeypatch.setattr(logging.getLogger("mvit"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="mvit.runtime.lock")
    return caplog


def test_second_lock_is_refused_naming_directory_host_and_pid(tmp_path):
    with OutputDirLock(str(tmp_path)) as first:
        owner = json.loads((tmp_path / LOCK_NAME).read_text())
        assert owner["host"] == socket.gethostname() and owner["pid"] == os.getpid()
        with pytest.raises(OutputDirLocked) as info:
            OutputDirLock(str(tmp_path)).acquire()
        assert first.held
    line = report(info.value)
    assert isinstance(info.value, UserError) and str(info.value) == line
    assert line.startswith(f"OUTPUT_DIR {tmp_path} is in use by another run (host {socket.gethostname()}, pid ")
    assert f"pid {os.getpid()}, started " in line
    assert not (tmp_path / LOCK_NAME).exists()  # released: the file goes
    with OutputDirLock(str(tmp_path)):  # and the folder can be taken again
        pass


def test_lock_left_by_a_killed_run_is_taken_over_with_a_warning(tmp_path, lock_warnings):
    pid = _dead_pid()
    info = {"host": socket.gethostname(), "pid": pid, "started": "2020-01-01T00:00:00+0000"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(info))
    # The file of a run killed with -9 (its flock went with it), then one whose flock an orphaned child still holds.
    for orphan_holds_it in (False, True):
        held = None
        if orphan_holds_it:
            (tmp_path / LOCK_NAME).write_text(json.dumps(info))
            held = os.open(tmp_path / LOCK_NAME, os.O_RDWR)
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock_warnings.clear()
        try:
            with OutputDirLock(str(tmp_path)):
                assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        finally:
            if held is not None:
                os.close(held)
        assert f"pid {pid}" in lock_warnings.text and "taking over" in lock_warnings.text


def test_lock_of_a_live_process_on_another_host_is_not_taken_over(tmp_path):
    info = {"host": "another-node", "pid": _dead_pid(), "started": "2020-01-01T00:00:00+0000"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(info))
    held = os.open(tmp_path / LOCK_NAME, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(OutputDirLocked, match="host another-node, pid"):
            OutputDirLock(str(tmp_path)).acquire()
    finally:
        os.close(held)


# ---------------------------------------------------------------------------------------------- through runner.train
def _images(_cfg, split):
    return NoisyImages(8 if split == "train" else 4)


register_dataset("engine_test_lock_images", _images)


def _cfg(tmp_path):
    return small_cfg(
        **{
            "TRAIN.DATASET": "engine_test_lock_images",
            "TRAIN.EVAL_PERIOD": 0,
            "TRAIN.TENSORBOARD": False,
            "SOLVER.MAX_EPOCH": 1,
            "OUTPUT_DIR": str(tmp_path / "out"),
            "NUM_GPUS": 0,
        }
    )


def test_training_refuses_a_locked_output_dir_before_writing_and_releases_after(tmp_path, monkeypatch):
    monkeypatch.setattr(H, "plot_curves", lambda *_: None)  # matplotlib takes seconds; the plot is not tested here
    out = tmp_path / "out"
    with OutputDirLock(str(out)):
        with pytest.raises(OutputDirLocked, match=f"OUTPUT_DIR {out} is in use by another run"):
            runner.train(_cfg(tmp_path), build_model=lambda _cfg: TinyNet())
        assert sorted(os.listdir(out)) == [LOCK_NAME]  # no log, config or checkpoint written
    runner.train(_cfg(tmp_path), build_model=lambda _cfg: TinyNet())
    assert (out / "checkpoints" / "last.pyth").exists() and not (out / LOCK_NAME).exists()
