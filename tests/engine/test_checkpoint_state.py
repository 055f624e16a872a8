"""Atomic training-state files and the choice of the checkpoint to resume from."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from mvit.checkpoint.state import (
    STATE_FORMAT,
    CheckpointError,
    atomic_save,
    find_resume_checkpoint,
    list_checkpoints,
    load_training_state,
)


def _state(epoch: int) -> dict:
    return {
        "format": STATE_FORMAT,
        "epoch": epoch,
        "iter": 0,
        "step": 10 * epoch,
        "model": {"w": torch.ones(3) * epoch},
    }


def _age(path, seconds: float) -> None:
    """Make a file look ``seconds`` older (explicit modification times instead of waiting)."""
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - int(seconds * 1e9)))


@pytest.fixture
def caplog_mvit(caplog, monkeypatch):
    # run_net's logging set-up stops propagation of the "mvit" logger; caplog listens at the root.
    monkeypatch.setattr(logging.getLogger("mvit"), "propagate", True)
    caplog.set_level(logging.WARNING)
    return caplog


def test_atomic_save_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "ckpt" / "last.pyth")
    atomic_save(_state(1), path)
    atomic_save(_state(2), path)
    assert load_training_state(path)["epoch"] == 2
    assert os.listdir(tmp_path / "ckpt") == ["last.pyth"]


def test_truncated_newest_checkpoint_is_skipped_with_a_warning(tmp_path, caplog_mvit):
    atomic_save(_state(1), str(tmp_path / "checkpoint_epoch_00001.pyth"))
    atomic_save(_state(2), str(tmp_path / "checkpoint_epoch_00002.pyth"))
    atomic_save(_state(3), str(tmp_path / "last.pyth"))
    _age(tmp_path / "checkpoint_epoch_00001.pyth", 20)
    _age(tmp_path / "checkpoint_epoch_00002.pyth", 10)
    (tmp_path / "last.pyth.tmp123").write_bytes(b"partial")  # a write killed before its rename
    data = (tmp_path / "last.pyth").read_bytes()
    (tmp_path / "last.pyth").write_bytes(data[: len(data) // 2])

    path, state = find_resume_checkpoint(str(tmp_path))
    assert os.path.basename(path) == "checkpoint_epoch_00002.pyth" and state["epoch"] == 2
    assert any("last.pyth" in r.getMessage() and "skipping" in r.getMessage() for r in caplog_mvit.records)


def test_last_is_preferred_and_foreign_files_are_skipped(tmp_path, caplog_mvit):
    atomic_save(_state(4), str(tmp_path / "last.pyth"))
    atomic_save(_state(1), str(tmp_path / "best.pyth"))
    _age(tmp_path / "last.pyth", 10)  # best.pyth is newer (a copy written after last)
    torch.save({"model_state": {}}, tmp_path / "weights.pyth")  # not a training state
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))][0] == "last.pyth"
    assert find_resume_checkpoint(str(tmp_path))[1]["epoch"] == 4
    os.remove(tmp_path / "last.pyth")
    os.remove(tmp_path / "best.pyth")
    assert find_resume_checkpoint(str(tmp_path)) is None
    assert any("weights.pyth" in r.getMessage() for r in caplog_mvit.records)


def test_empty_or_missing_directory_has_no_checkpoint(tmp_path):
    assert find_resume_checkpoint(str(tmp_path / "missing")) is None
    with pytest.raises(CheckpointError, match="nothing.pyth"):
        load_training_state(str(tmp_path / "nothing.pyth"))
