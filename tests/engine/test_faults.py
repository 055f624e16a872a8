"""Training faults in the shared engine: NaN / inf losses, a full disk while saving, a killed loader worker."""

from __future__ import annotations

import json
import math
import os
import re
import resource
import signal
from pathlib import Path

import pytest
import torch
from torch.utils.data import get_worker_info

from mvit.checkpoint.state import find_resume_checkpoint, load_training_state
from mvit.data.loader import LoaderWorkerError, build_loader
from mvit.data.registry import register_dataset
from mvit.engine import hooks as H
from mvit.engine import runner
from mvit.engine import trainer as trainer_module
from mvit.engine.train_loop import HookBase
from mvit.engine.trainer import ClassificationTrainer, NonFiniteLossError
from mvit.errors import CheckpointError, UserError, report
from mvit.utils.rng import seed_all

from .conftest import NoisyImages, TinyNet, small_cfg


class NanLossAt(HookBase):
    """Makes the model's output (hence the loss) NaN during the given global steps (1-based)."""

    def __init__(self, model: torch.nn.Module, steps) -> None:
        self.steps, self.active = set(steps), False
        model.register_forward_hook(lambda _m, _i, out: out * float("nan") if self.active else None)

    def before_step(self) -> None:
        self.active = self.trainer.step + 1 in self.steps


class Snapshots(HookBase):
    """The model and EMA weights and the optimizer's step count after every step."""

    def __init__(self, ema: H.EMA) -> None:
        self.ema, self.after = ema, {}

    def after_step(self) -> None:
        t = self.trainer
        opt_steps = {int(s["step"]) for s in t.optimizer.state.values() if "step" in s}
        self.after[t.step] = (
            {k: v.clone() for k, v in t.model.state_dict().items()},
            {k: v.clone() for k, v in self.ema.module.state_dict().items()},
            opt_steps,
        )


def build(cfg, out: Path, *, nan_steps=(), extra=()):
    seed_all(0)
    model = TinyNet()
    loader = build_loader(NoisyImages(12), batch_size=cfg.TRAIN.BATCH_SIZE, train=True, seed=cfg.RNG_SEED)
    trainer = ClassificationTrainer(
        cfg, model, loader, device=torch.device("cpu"), items_per_batch=cfg.TRAIN.BATCH_SIZE
    )  # 3 steps per epoch
    ema = H.EMA(model, decay=0.9)
    trainer.register_hooks(
        [
            H.LRScheduler(),
            NanLossAt(model, nan_steps),
            ema,
            *extra,
            H.Checkpointer(str(out / "checkpoints"), epoch_period=1),
        ]
    )
    return trainer, ema


def _all_finite(state: dict) -> bool:
    tensors = [*state["model"].values(), *state["hooks"]["ema"]["model"].values()]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


@pytest.mark.parametrize(
    ("nan_step", "where", "checkpoint"),
    [(5, "epoch 2 iteration 2/3 (step 5)", "last.pyth"), (2, "epoch 1 iteration 2/3 (step 2)", None)],
)
def test_nan_loss_stops_naming_the_iteration_and_the_last_good_checkpoint(tmp_path, nan_step, where, checkpoint):
    trainer, _ = build(small_cfg(), tmp_path, nan_steps=[nan_step])
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    assert isinstance(info.value, UserError)  # run_cli: one line, exit 2
    line = report(info.value)
    assert str(info.value) == line and line.startswith(f"loss is nan at {where}; last good checkpoint: ")
    if checkpoint is None:
        assert "no checkpoint yet" in line and find_resume_checkpoint(str(tmp_path / "checkpoints")) is None
        return
    path = str(tmp_path / "checkpoints" / checkpoint)
    assert f"checkpoint: {path};" in line and "TRAIN.NONFINITE_LOSS skip" in line
    found, state = find_resume_checkpoint(str(tmp_path / "checkpoints"))
    assert found == path and (state["epoch"], state["iter"], state["step"]) == (1, 0, 3) and _all_finite(state)
    resumed, _ = build(small_cfg(), tmp_path)
    resumed.load_state_dict(state)
    resumed.train()
    assert resumed.step == 6


def test_skip_mode_leaves_weights_ema_and_optimizer_unchanged_and_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(H, "plot_curves", lambda *_: None)  # matplotlib takes seconds; the plot is not tested here
    cfg = small_cfg(**{"TRAIN.NONFINITE_LOSS": "skip"})
    trainer, ema = build(cfg, tmp_path, nan_steps=[3, 5], extra=[H.MetricsWriter(str(tmp_path), 2, tensorboard=False)])
    snaps = Snapshots(ema)
    trainer.register_hooks([snaps])
    trainer.train()
    for skipped in (3, 5):
        before, after = snaps.after[skipped - 1], snaps.after[skipped]
        assert all(torch.equal(before[0][k], after[0][k]) for k in before[0]), "model changed on a skipped step"
        assert all(torch.equal(before[1][k], after[1][k]) for k in before[1]), "EMA changed on a skipped step"
        assert before[2] == after[2], "the optimizer stepped on a skipped step"
    changed = snaps.after[4]
    assert not torch.equal(snaps.after[3][0]["head.weight"], changed[0]["head.weight"])  # others do train
    assert trainer.storage.skipped_steps == 2
    _, state = find_resume_checkpoint(str(tmp_path / "checkpoints"))
    assert state["skipped_steps"]["total"] == 2 and _all_finite(state)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epoch = [r for r in records if r["split"] == "train_epoch"]
    assert [r["skipped_steps"] for r in epoch] == [1, 1]  # one skipped step in each epoch
    assert all(math.isfinite(r["loss"]) for r in epoch)  # the means leave the NaN out


@pytest.mark.parametrize(
    ("max_skips", "nan_steps", "stops_at", "why"),
    [
        (2, range(2, 7), "epoch 2 iteration 1/3", "3 steps in a row skipped (more than TRAIN.NONFINITE_MAX_SKIPS 2)"),
        (10, range(4, 7), "epoch 2 iteration 3/3", "every step of epoch 2 was skipped"),
    ],
)
def test_skip_mode_stops_after_too_many_skips(tmp_path, max_skips, nan_steps, stops_at, why):
    cfg = small_cfg(**{"TRAIN.NONFINITE_LOSS": "skip", "TRAIN.NONFINITE_MAX_SKIPS": max_skips})
    trainer, _ = build(cfg, tmp_path, nan_steps=nan_steps)
    with pytest.raises(NonFiniteLossError, match=re.escape(why)) as info:
        trainer.train()
    assert stops_at in str(info.value) and "last good checkpoint: " in str(info.value)


@pytest.mark.parametrize("where", ["model", "ema"])
def test_checkpointer_refuses_non_finite_weights(tmp_path, where):
    trainer, ema = build(small_cfg(**{"SOLVER.MAX_EPOCH": 1}), tmp_path)
    trainer.train()
    last = tmp_path / "checkpoints" / "last.pyth"
    before = last.read_bytes()
    net = trainer.model if where == "model" else ema.module
    with torch.no_grad():
        net.head.weight[0, 0] = float("nan")
    checkpointer = next(h for h in trainer.hooks if isinstance(h, H.Checkpointer))
    with pytest.raises(CheckpointError, match=f"not writing {last}: weight {where}.head.weight is not finite"):
        checkpointer.after_epoch()
    assert last.read_bytes() == before and sorted(os.listdir(last.parent)) == [
        "checkpoint_epoch_00001.pyth",
        "last.pyth",
    ]


# ---------------------------------------------------------------------------------------------- through runner.train
class FaultyImages(NoisyImages):
    """Kills its loader worker (SIGKILL, as the OOM killer does) the second time it loads item ``kill_at`` (in
    epoch 2) if the file ``marker`` exists; the kill removes the file (once)."""

    def __init__(self, n: int, marker: str = "", kill_at: int = -1) -> None:
        super().__init__(n)
        self.marker, self.kill_at = marker, kill_at

    def __getitem__(self, index: int):
        if index == self.kill_at and get_worker_info() is not None and os.path.exists(self.marker):
            marker = Path(self.marker)
            if marker.read_text() == "seen":
                marker.unlink()
                os.kill(os.getpid(), signal.SIGKILL)
            marker.write_text("seen")
        return super().__getitem__(index)


def _faulty_images(cfg, split):
    marker = os.path.join(cfg.DATA.PATH_TO_DATA_DIR, "kill") if split == "train" else ""
    return FaultyImages(12 if split == "train" else 6, marker=marker, kill_at=5)


register_dataset("engine_test_faulty_images", _faulty_images)


def run_cfg(tmp_path: Path, **overrides):
    return small_cfg(
        **{
            "TRAIN.DATASET": "engine_test_faulty_images",
            "TRAIN.EVAL_PERIOD": 1,
            "TRAIN.TENSORBOARD": False,
            "DATA.PATH_TO_DATA_DIR": str(tmp_path),
            "OUTPUT_DIR": str(tmp_path / "out"),
            "NUM_GPUS": 0,
            **overrides,
        }
    )


def _train(cfg):
    return runner.train(cfg, build_model=lambda _cfg: TinyNet())


@pytest.fixture
def no_plot(monkeypatch):
    monkeypatch.setattr(H, "plot_curves", lambda *_: None)  # matplotlib takes seconds; the plot is not tested here


def _log(tmp_path: Path) -> str:
    return (tmp_path / "out" / "log.txt").read_text()


def test_full_disk_while_saving_keeps_the_previous_checkpoint_and_the_next_run_resumes(tmp_path, no_plot):
    _train(run_cfg(tmp_path, **{"SOLVER.MAX_EPOCH": 1}))
    ckpt = tmp_path / "out" / "checkpoints"
    last = ckpt / "last.pyth"
    size = last.stat().st_size
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, limits[1]))
    try:
        with pytest.raises(CheckpointError) as info:
            _train(run_cfg(tmp_path, **{"SOLVER.MAX_EPOCH": 2}))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    line = report(info.value)
    assert line.startswith(f"could not write {last}: ") and f"file-size limit (ulimit -f) {size // 2} bytes" in line
    assert sorted(os.listdir(ckpt)) == ["best.pyth", "checkpoint_epoch_00001.pyth", "last.pyth"]  # no temporary
    assert load_training_state(str(last))["epoch"] == 1

    _train(run_cfg(tmp_path, **{"SOLVER.MAX_EPOCH": 2}))
    assert _log(tmp_path).count(f"resumed from {last} at epoch 1 iteration 0") == 2  # the failed run, then this
    assert load_training_state(str(last))["epoch"] == 2


def test_killed_loader_worker_stops_with_a_message_and_the_rerun_resumes(tmp_path, no_plot):
    cfg = run_cfg(tmp_path, **{"DATA_LOADER.NUM_WORKERS": 1, "SOLVER.MAX_EPOCH": 2})
    (tmp_path / "kill").touch()
    with pytest.raises(LoaderWorkerError) as info:
        _train(cfg)
    assert not (tmp_path / "kill").exists()  # killed in epoch 2
    line = report(info.value)
    assert isinstance(info.value, UserError) and str(info.value) == line
    assert "was killed by signal 9 (SIGKILL), probably by the out-of-memory killer at epoch 2 iteration" in line
    last = tmp_path / "out" / "checkpoints" / "last.pyth"
    assert (
        f"lower DATA_LOADER.NUM_WORKERS or TRAIN.BATCH_SIZE, then run the same command to resume (last checkpoint: {last})"
        in line
    )
    assert load_training_state(str(last))["epoch"] == 1

    _train(cfg)
    assert f"resumed from {last} at epoch 1 iteration 0" in _log(tmp_path)
    assert load_training_state(str(last))["epoch"] == 2


# ---------------------------------------------------------------------------------------------- several processes
@pytest.mark.parametrize("mode", ["skip", "stop"])
def test_a_nan_loss_on_another_rank_is_handled_here_too(tmp_path, monkeypatch, mode):
    """Every rank must take the same branch or DDP's gradient all-reduce waits forever: the finiteness flag is
    all-reduced (MIN). Another rank's NaN at step 3 is simulated by that all-reduce (a real 2-process run costs a
    minute of CI for three interpreter starts)."""
    cfg = small_cfg(**{"TRAIN.NONFINITE_LOSS": mode, "SOLVER.MAX_EPOCH": 1})
    trainer, ema = build(cfg, tmp_path)
    snaps = Snapshots(ema)
    trainer.register_hooks([snaps])
    ops = []

    def all_reduce(tensor, op):
        ops.append(op)
        if trainer.step + 1 == 3:
            tensor.zero_()

    monkeypatch.setattr(trainer_module, "is_distributed", lambda: True)
    monkeypatch.setattr(trainer_module.dist, "all_reduce", all_reduce)
    if mode == "stop":
        with pytest.raises(
            NonFiniteLossError, match=r"^loss is not finite on another process at epoch 1 iteration 3/3"
        ):
            trainer.train()
        return
    trainer.train()
    assert trainer.storage.skipped_steps == 1 and set(ops) == {trainer_module.dist.ReduceOp.MIN}
    assert all(torch.equal(snaps.after[2][0][k], v) for k, v in snaps.after[3][0].items())
