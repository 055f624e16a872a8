"""Trainer hooks: lr schedule, EMA, evaluation, checkpoints (+ preemption), metrics writers, progress bar.

They run on a trainer that satisfies :class:`SupervisedTrainer` (:class:`~mvit.engine.ClassificationTrainer`
does) and exchange values through its declared :class:`~mvit.engine.train_loop.TrainerStorage`.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import time
from typing import Any, Optional, Protocol

import torch
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..checkpoint.state import LAST_NAME, atomic_copy, atomic_save, check_finite_weights
from ..runtime import preemption
from ..utils.distributed import is_main_process, synchronize
from ..utils.rng import generator_state, load_generator_state
from .evaluation import evaluate
from .lr_schedule import LRSchedule
from .plots import plot_curves
from .train_loop import HookBase, TrainerStorage

__all__ = [
    "EMA",
    "Checkpointer",
    "EvalHook",
    "LRScheduler",
    "MetricsWriter",
    "ProgressBar",
    "SupervisedHook",
    "SupervisedTrainer",
    "json_line",
]

logger = logging.getLogger(__name__)


def json_line(record: dict[str, Any]) -> str:
    """``record`` as one line of strict JSON: a non-finite number is written ``null`` (``json.dumps`` would write
    ``Infinity`` / ``NaN``, which JSON parsers other than Python's reject)."""
    clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
    return json.dumps(clean, allow_nan=False)


class SupervisedTrainer(Protocol):
    """What the hooks of this module read from and call on their trainer (besides :class:`TrainerStorage`)."""

    epoch: int
    iter: int
    step: int
    max_epoch: int
    iters_per_epoch: int
    storage: TrainerStorage
    model: nn.Module
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    lr_schedule: LRSchedule

    @property
    def epoch_float(self) -> float: ...

    def set_lr(self, lr: float) -> None: ...

    def state_dict(self, epoch_done: bool = False) -> dict[str, Any]: ...


class SupervisedHook(HookBase):
    """A hook of a :class:`SupervisedTrainer`."""

    trainer: SupervisedTrainer  # type: ignore[assignment]


class LRScheduler(SupervisedHook):
    """Sets the lr of every parameter group before each step from the trainer's epoch-based schedule."""

    def before_step(self) -> None:
        t = self.trainer
        t.set_lr(t.lr_schedule(t.epoch_float))


class EMA(SupervisedHook):
    """Exponential moving average of the weights (timm's ``ModelEmaV3``), updated after every step.

    Args:
        model: the unwrapped model (its current weights initialise the average).
        decay: per-step decay; ``warmup`` ramps it up over the first steps (timm's ``use_warmup``).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = False) -> None:
        self.ema = ModelEmaV3(model, decay=decay, use_warmup=warmup)

    name = "ema"  # type: ignore[assignment]

    @property
    def module(self) -> nn.Module:
        return self.ema.module

    def after_step(self) -> None:
        if self.trainer.storage.step_skipped:  # the weights did not change: neither does their average
            return
        self.ema.update(self.trainer.model, step=self.trainer.step)

    def state_dict(self) -> dict[str, Any]:
        # timm keeps the stochastic-rounding generator on the EMA's device (CUDA on a GPU run): stored with its
        # device kind so that a checkpoint resumes on the CPU or a GPU alike.
        return {"model": self.ema.module.state_dict(), "sr_generator": generator_state(self.ema._sr_generator)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.module.load_state_dict(state["model"])
        if "sr_generator" in state:
            load_generator_state(self.ema._sr_generator, state["sr_generator"])


class EvalHook(SupervisedHook):
    """Evaluates the model (and the EMA beside it) every ``period`` epochs and after the last one.

    Results go to ``trainer.storage.latest_eval`` as ``{"val": metrics, "val_ema": metrics}`` (empty on other epochs).
    """

    def __init__(self, loader: DataLoader, period: int, ema: Optional[EMA] = None, progress: bool = False) -> None:
        self.loader, self.period, self.ema, self.progress = loader, period, ema, progress

    def after_epoch(self) -> None:
        t = self.trainer
        done = t.epoch + 1
        t.storage.latest_eval = {}
        if not (self.period > 0 and done % self.period == 0) and done != t.max_epoch:
            return
        models = {"val": t.model}
        if self.ema is not None:
            models["val_ema"] = self.ema.module
        for split, model in models.items():
            res = evaluate(
                model, self.loader, device=t.device, amp_dtype=t.amp_dtype, progress=self.progress, desc=split
            )
            t.storage.latest_eval[split] = res.metrics
            # Multi-view evaluation scores ensembles of softmax scores: no loss to report there.
            loss = f" loss {res.metrics['loss']:.4f}" if "loss" in res.metrics else ""
            logger.info(
                "epoch %d %s: top-1 %.2f%% top-5 %.2f%%%s (%d samples)",
                done,
                split,
                res.metrics["top1"],
                res.metrics["top5"],
                loss,
                res.metrics["num_samples"],
            )


class Checkpointer(SupervisedHook):
    """Atomic training-state checkpoints in ``directory`` and cooperative preemption.

    - ``last.pyth``: after every epoch, and every ``iter_period`` steps when > 0;
    - ``checkpoint_epoch_{E:05d}.pyth``: every ``epoch_period`` epochs and after the last;
    - ``best.pyth``: when ``val`` top-1 improves.

    After every step it checks (all ranks agree) whether a stop was requested
    (:mod:`mvit.runtime.preemption`); if so it writes ``last.pyth`` and raises
    :class:`~mvit.runtime.preemption.Preempted`.

    A state whose model or EMA weights are not finite is never written (:class:`~mvit.errors.CheckpointError`
    instead, on every rank alike: the weights are the same on all); the path of the last file written is in
    ``trainer.storage.last_checkpoint``.
    """

    name = "checkpointer"  # type: ignore[assignment]

    def __init__(self, directory: str, epoch_period: int, iter_period: int = 0) -> None:
        self.directory, self.epoch_period, self.iter_period = directory, epoch_period, iter_period
        self.best: Optional[float] = None

    def _write(self, name: str, state: dict[str, Any]) -> str:
        path = os.path.join(self.directory, name)
        check_finite_weights(state, path)
        if is_main_process():
            atomic_save(state, path)
        self.trainer.storage.last_checkpoint = path
        return path

    def _stop(self, path: str) -> None:
        synchronize()  # every rank waits until the checkpoint is complete before anyone exits
        t = self.trainer
        raise preemption.Preempted(path, t.epoch, t.iter, preemption.stop_reason())

    def after_step(self) -> None:
        t = self.trainer
        stop = preemption.sync_stop_requested(t.device)
        if stop or (self.iter_period > 0 and t.step % self.iter_period == 0):
            path = self._write(LAST_NAME, t.state_dict())
            if stop:
                logger.info("stop requested: saved %s at epoch %d iteration %d", path, t.epoch, t.iter)
                self._stop(path)

    def after_epoch(self) -> None:
        t = self.trainer
        done = t.epoch + 1
        metric = t.storage.latest_eval.get("val", {}).get("top1")
        is_best = metric is not None and (self.best is None or metric > self.best)
        if is_best:
            self.best = metric
        last = self._write(LAST_NAME, t.state_dict(epoch_done=True))
        if is_main_process():
            if (self.epoch_period > 0 and done % self.epoch_period == 0) or done == t.max_epoch:
                atomic_copy(last, os.path.join(self.directory, f"checkpoint_epoch_{done:05d}.pyth"))
            if is_best:
                atomic_copy(last, os.path.join(self.directory, "best.pyth"))
        logger.info("epoch %d: saved %s%s", done, last, " (new best)" if is_best else "")
        synchronize()
        if preemption.sync_stop_requested(t.device):
            self._stop(last)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best} if self.best is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")


class MetricsWriter(SupervisedHook):
    """JSON lines (``metrics.jsonl``), TensorBoard scalars (``tensorboard/``) and ``curves.png`` in ``output_dir``.

    Every ``period`` steps: the window's mean training loss (reduced over ranks), lr, throughput and ETA.
    After each epoch: the epoch's means, the evaluation results, and a redrawn plot. Only rank 0 writes, but
    every rank must run the hook (the reductions are collectives).
    """

    def __init__(self, output_dir: str, period: int, tensorboard: bool = True) -> None:
        self.output_dir, self.period, self.tensorboard = output_dir, max(1, period), tensorboard
        self.jsonl = os.path.join(output_dir, "metrics.jsonl")
        self.png = os.path.join(output_dir, "curves.png")
        self._tb = None
        self._tw = 0.0
        self._steps_in_window = 0
        self._overflows_in_window = 0

    def before_train(self) -> None:
        if is_main_process() and self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when used

            self._tb = SummaryWriter(os.path.join(self.output_dir, "tensorboard"))
        self._tw = time.perf_counter()

    def _write(self, record: dict[str, Any], step: int) -> None:
        if not is_main_process():
            return
        with open(self.jsonl, "a") as f:
            f.write(json_line(record) + "\n")
        if self._tb is not None:
            split = record["split"]
            for key, value in record.items():
                if key in ("split", "epoch", "iter", "step") or not isinstance(value, (int, float)):
                    continue
                if math.isfinite(value):  # as in the JSON lines: no inf / NaN point in the curves
                    self._tb.add_scalar(f"{split}/{key}", value, step)

    def after_step(self) -> None:
        t = self.trainer
        self._steps_in_window += 1
        self._overflows_in_window += t.storage.scaler_skipped
        if t.iter % self.period and t.iter != t.iters_per_epoch:
            return
        averages = t.storage.window_meter.averages()
        t.storage.window_meter.reset()
        if self._overflows_in_window:  # fp16 steps whose update the GradScaler skipped (no grad_norm in the mean)
            averages["overflow_steps"] = self._overflows_in_window
            self._overflows_in_window = 0
        now = time.perf_counter()
        sec_per_step = (now - self._tw) / max(self._steps_in_window, 1)
        self._tw, self._steps_in_window = now, 0
        left = (t.max_epoch - t.epoch) * t.iters_per_epoch - t.iter
        record = {
            "split": "train",
            "epoch": round(t.epoch_float, 6),
            "iter": t.iter,
            "step": t.step,
            "lr": t.storage.lr,
            **averages,
            "sec_per_step": sec_per_step,
        }
        self._write(record, t.step)
        logger.info(
            "epoch %d iter %d/%d: loss %.4f lr %.3e (%.2f s/step, eta %s)",
            t.epoch + 1,
            t.iter,
            t.iters_per_epoch,
            averages.get("loss", float("nan")),
            t.storage.lr,
            sec_per_step,
            datetime.timedelta(seconds=int(left * sec_per_step)),
        )

    def after_epoch(self) -> None:
        t = self.trainer
        done = t.epoch + 1
        averages = t.storage.epoch_meter.averages()
        if t.storage.epoch_skipped_steps:  # non-finite losses skipped (TRAIN.NONFINITE_LOSS skip)
            averages["skipped_steps"] = t.storage.epoch_skipped_steps
        if t.storage.epoch_overflow_steps:  # fp16 updates skipped by the GradScaler
            averages["overflow_steps"] = t.storage.epoch_overflow_steps
        self._write({"split": "train_epoch", "epoch": done, "step": t.step, "lr": t.storage.lr, **averages}, t.step)
        for split, metrics in t.storage.latest_eval.items():
            self._write({"split": split, "epoch": done, "step": t.step, **metrics}, t.step)
        if is_main_process():
            if self._tb is not None:
                self._tb.flush()
            try:
                plot_curves(self.jsonl, self.png)
            except Exception as err:  # noqa: BLE001 - a plotting failure must not stop training
                logger.warning("could not draw %s: %s", self.png, err)

    def after_train(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class ProgressBar(SupervisedHook):
    """A tqdm bar per epoch (rank 0 and a terminal only; see :func:`mvit.utils.logging.progress_enabled`)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Optional[tqdm] = None

    def before_epoch(self) -> None:
        if not self.enabled:
            return
        t = self.trainer
        self._bar = tqdm(
            total=t.iters_per_epoch,
            initial=t.iter,
            desc=f"epoch {t.epoch + 1}/{t.max_epoch}",
            dynamic_ncols=True,
            leave=False,
        )

    def after_step(self) -> None:
        if self._bar is None:
            return
        storage = self.trainer.storage
        self._bar.set_postfix(
            loss=f"{storage.last_values.get('loss', float('nan')):.4f}", lr=f"{storage.lr:.2e}", refresh=False
        )
        self._bar.update(1)

    def after_epoch(self) -> None:
        self.after_train()

    def after_train(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
