"""fp16 overflow steps (issue 19, item 7), on the CPU with ``torch.amp.GradScaler("cpu")``: an inf gradient makes
the scaler skip the update; the logs stay strict JSON without an inf grad_norm, and the EMA skips the step too."""

from __future__ import annotations

import json
from unittest import mock

import torch

from mvit.data import build_loader
from mvit.engine import hooks as H
from mvit.engine.train_loop import HookBase
from mvit.engine.trainer import ClassificationTrainer
from mvit.utils.rng import seed_all

from .conftest import NoisyImages, TinyNet, small_cfg

OVERFLOW_STEP = 3


class InfGradAt(HookBase):
    """Makes the head's weight gradient inf during one global step (1-based); the loss stays finite."""

    def __init__(self, model: torch.nn.Module, step: int) -> None:
        self.step, self.active = step, False
        model.head.weight.register_hook(lambda g: g * float("inf") if self.active else None)

    def before_step(self) -> None:
        self.active = self.trainer.step + 1 == self.step


class Record(HookBase):
    def __init__(self, ema: H.EMA) -> None:
        self.ema, self.after = ema, {}

    def after_step(self) -> None:
        t = self.trainer
        self.after[t.step] = (
            {k: v.clone() for k, v in t.model.state_dict().items()},
            {k: v.clone() for k, v in self.ema.module.state_dict().items()},
            t.scaler.get_scale(),
        )


def _strict(line: str) -> dict:
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def test_an_overflow_step_is_logged_as_skipped_and_the_ema_skips_it(tmp_path, monkeypatch):
    monkeypatch.setattr(H, "plot_curves", lambda *_: None)  # matplotlib takes seconds; the plot is not tested here
    cfg = small_cfg(**{"SOLVER.MAX_EPOCH": 1})
    seed_all(0)
    model = TinyNet()
    loader = build_loader(NoisyImages(24), batch_size=4, train=True, seed=0)
    trainer = ClassificationTrainer(cfg, model, loader, device=torch.device("cpu"), items_per_batch=4)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)  # fp16's scaler, runnable on the CPU
    ema = H.EMA(model, decay=0.9)
    record = Record(ema)
    writer = H.MetricsWriter(str(tmp_path), period=1, tensorboard=False)
    writer._tb = tensorboard = mock.Mock()
    trainer.register_hooks([H.LRScheduler(), InfGradAt(model, OVERFLOW_STEP), ema, record, writer])
    trainer.train()

    before, after = record.after[OVERFLOW_STEP - 1], record.after[OVERFLOW_STEP]
    assert after[2] == before[2] / 2, "the scaler did not skip the step"
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0]), "the weights changed"
    assert all(torch.equal(before[1][k], after[1][k]) for k in before[1]), "the EMA moved on a skipped step"
    nxt = record.after[OVERFLOW_STEP + 1]
    assert not torch.equal(after[1]["head.weight"], nxt[1]["head.weight"])  # the EMA follows the other steps

    records = [_strict(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r for r in records if r["split"] == "train"}
    assert len(train) == 6
    assert train[OVERFLOW_STEP]["overflow_steps"] == 1 and train[OVERFLOW_STEP].get("grad_norm") is None
    assert all("overflow_steps" not in r and r["grad_norm"] > 0 for s, r in train.items() if s != OVERFLOW_STEP)
    (epoch,) = [r for r in records if r["split"] == "train_epoch"]
    assert epoch["overflow_steps"] == 1 and 0 < epoch["grad_norm"] < float("inf")
    scalars = [c.args for c in tensorboard.add_scalar.call_args_list]
    assert scalars and all(abs(value) < float("inf") for _, value, _ in scalars)
    assert ("train/grad_norm", OVERFLOW_STEP) not in {(tag, step) for tag, _, step in scalars}


def test_json_lines_never_hold_a_non_finite_number():
    line = H.json_line({"split": "val", "loss": float("nan"), "top1": 50.0, "x": float("-inf")})
    assert _strict(line) == {"split": "val", "loss": None, "top1": 50.0, "x": None}
