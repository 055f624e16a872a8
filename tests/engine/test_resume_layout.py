"""Resuming on another world size or batch (issue 19, item 10): a mid-epoch checkpoint resumes only on the layout
that wrote it (the iteration and the data position are in its units), an epoch-end one on any layout."""

from __future__ import annotations

import pytest
import torch

from mvit.checkpoint.state import CheckpointError, find_resume_checkpoint
from mvit.data import build_loader
from mvit.engine import hooks as H
from mvit.engine import trainer as trainer_module
from mvit.engine.train_loop import HookBase
from mvit.engine.trainer import ClassificationTrainer
from mvit.errors import run_cli
from mvit.runtime import preemption
from mvit.utils.rng import seed_all

from .conftest import NoisyImages, TinyNet, small_cfg


class StopAt(HookBase):
    def __init__(self, step: int) -> None:
        self.at = step

    def after_step(self) -> None:
        if self.trainer.step == self.at:
            preemption.request_stop("test")


class SeenItems(NoisyImages):
    """Records the indices it serves."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.seen: list[int] = []

    def __getitem__(self, index: int):
        self.seen.append(index)
        return super().__getitem__(index)


def _trainer(out, *, items: int, world: int = 1, rank: int = 0, dataset=None, extra=(), epochs: int = 2):
    seed_all(0)
    model = TinyNet()
    dataset = dataset if dataset is not None else NoisyImages(24)
    loader = build_loader(dataset, batch_size=items, train=True, seed=0, rank=rank, world_size=world)
    cfg = small_cfg(**{"SOLVER.MAX_EPOCH": epochs})
    trainer = ClassificationTrainer(cfg, model, loader, device=torch.device("cpu"), items_per_batch=items)
    trainer.register_hooks([H.LRScheduler(), H.EMA(model, decay=0.9), *extra, H.Checkpointer(str(out), 1)])
    return trainer


def _saved_mid_epoch(tmp_path):
    first = _trainer(tmp_path, items=4, extra=[StopAt(8)])  # 6 steps per epoch: stops at epoch 1 iteration 2
    with pytest.raises(preemption.Preempted):
        first.train()
    preemption.clear_stop_request()
    path, state = find_resume_checkpoint(str(tmp_path))
    assert (state["epoch"], state["iter"]) == (1, 2)
    return path, state


@pytest.mark.parametrize("legacy", [False, True])
def test_a_mid_epoch_checkpoint_refuses_another_batch_in_one_line(tmp_path, capsys, legacy):
    path, state = _saved_mid_epoch(tmp_path)
    if legacy:  # files written before the layout was stored: it is read from their config
        state.pop("items_per_step")
    resumed = _trainer(tmp_path / "other", items=2)
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: resumed.load_state_dict(state, source=path))
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: cannot resume {path} in the middle of epoch 2 (iteration 2) on another layout: ")
    assert "written by 1 process(es) x 4 items per step (global batch 4)" in line
    assert "this run has 1 process(es) x 2 items per step (global batch 2)" in line
    assert "NUM_GPUS" in line and "TRAIN.BATCH_SIZE" in line
    assert resumed.step == 0 and resumed.epoch == 0  # nothing was loaded


def test_a_mid_epoch_checkpoint_refuses_another_world_size(tmp_path, monkeypatch):
    _, state = _saved_mid_epoch(tmp_path)
    monkeypatch.setattr(trainer_module, "get_world_size", lambda: 2)
    monkeypatch.setattr(trainer_module, "get_rank", lambda: 0)
    resumed = _trainer(tmp_path / "other", items=2, world=2)  # the same global batch, shared by 2 processes
    with pytest.raises(CheckpointError, match=r"this run has 2 process\(es\) x 2 items per step \(global batch 4\)"):
        resumed.load_state_dict(state)


def test_an_epoch_end_checkpoint_resumes_on_another_batch_with_every_item_once(tmp_path):
    first = _trainer(tmp_path, items=4, epochs=1)
    first.train()
    _, state = find_resume_checkpoint(str(tmp_path))
    assert (state["epoch"], state["iter"], state["step"]) == (1, 0, 6)
    dataset = SeenItems(24)
    resumed = _trainer(tmp_path / "other", items=2, dataset=dataset, epochs=2)
    resumed.load_state_dict(state)
    resumed.train()
    assert resumed.iters_per_epoch == 12 and resumed.step == 6 + 12
    assert sorted(dataset.seen) == list(range(24))  # epoch 2 on the new batch: every item exactly once
