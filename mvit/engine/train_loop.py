"""Epoch-based training loop with hooks (detectron2's ``train_loop`` pattern).

The loop only counts positions and calls hooks; what happens at each point (lr schedule, EMA, evaluation,
checkpoints, logs, progress bars, preemption) is a hook. A hook's ``state_dict`` is saved in the training
checkpoint under its :attr:`HookBase.name` and restored on resume.

Position convention: ``trainer.epoch`` is the epoch being trained (0-based) and ``trainer.iter`` the number of
iterations (optimizer steps) completed in it; ``trainer.step`` counts steps since the start of training. A
checkpoint stores the position to continue from.

Hooks and the trainer exchange values through :class:`TrainerStorage` (``trainer.storage``), whose fields are
declared: the lr in use, the last step's scalars, the running meters and the latest evaluation results.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .meters import ScalarMeter

__all__ = ["HookBase", "TrainerBase", "TrainerStorage"]

logger = logging.getLogger(__name__)


@dataclass
class TrainerStorage:
    """The values a trainer publishes to its hooks and the hooks to each other (detectron2's ``EventStorage`` role).

    Attributes:
        lr: the base learning rate of the current step (set through the trainer's ``set_lr``).
        last_values: scalars of the last step (``loss``, ``top1``, ``grad_norm``, ...), written by the trainer;
            host floats, except values left on the device to save a host read (``grad_norm``: a 0-d tensor).
        window_meter: running sums since the last log line (reset by the writer that logs them).
        epoch_meter: running sums of the current epoch (checkpointed, so that a resumed epoch's mean is whole).
        latest_eval: ``{split: metrics}`` of the evaluation after the current epoch, written by the evaluation
            hook (empty on epochs without one) and read by the checkpointer and the metrics writer.
        step_skipped: the last step changed nothing (a non-finite loss skipped under ``TRAIN.NONFINITE_LOSS
            skip``): hooks that follow the weights (EMA) and the meters leave it out.
        skipped_steps, epoch_skipped_steps: steps skipped so far in the run and in the current epoch.
        scaler_skipped: the last step's update was skipped by the fp16 GradScaler (a gradient overflowed; the
            loss was finite): ``step_skipped`` is set too, and ``epoch_overflow_steps`` counts them.
        last_checkpoint: path of the newest complete checkpoint (written or resumed from), ``None`` before one.
    """

    lr: float = 0.0
    last_values: dict[str, Any] = field(default_factory=dict)
    window_meter: ScalarMeter = field(default_factory=ScalarMeter)
    epoch_meter: ScalarMeter = field(default_factory=ScalarMeter)
    latest_eval: dict[str, dict[str, float]] = field(default_factory=dict)
    step_skipped: bool = False
    skipped_steps: int = 0
    epoch_skipped_steps: int = 0
    scaler_skipped: bool = False
    epoch_overflow_steps: int = 0
    last_checkpoint: Optional[str] = None


class HookBase:
    """Base class of trainer hooks; override any subset of the six points and the state methods.

    Attributes:
        trainer: a weak reference to the trainer, set by :meth:`TrainerBase.register_hooks`.
    """

    trainer: TrainerBase

    @property
    def name(self) -> str:
        """Key of this hook's state in checkpoints."""
        return type(self).__name__

    def before_train(self) -> None: ...

    def after_train(self) -> None: ...

    def before_epoch(self) -> None: ...

    def after_epoch(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class TrainerBase:
    """Runs ``run_step`` ``iters_per_epoch`` times per epoch from the current position to ``max_epoch``.

    Subclasses implement :meth:`run_step` and may override :meth:`start_epoch` (e.g. to position a data
    iterator at ``self.iter``).
    """

    def __init__(self, iters_per_epoch: int, max_epoch: int) -> None:
        if iters_per_epoch <= 0:
            raise ValueError(f"an epoch needs at least one iteration, got iters_per_epoch={iters_per_epoch}")
        self.iters_per_epoch, self.max_epoch = iters_per_epoch, max_epoch
        self.epoch = self.iter = self.step = 0
        self.storage = TrainerStorage()
        self._hooks: list[HookBase] = []

    # ------------------------------------------------------------------ hooks
    @property
    def hooks(self) -> Sequence[HookBase]:
        return tuple(self._hooks)

    def register_hooks(self, hooks: Sequence[Optional[HookBase]]) -> None:
        """Append hooks (``None`` entries are ignored); they run in registration order."""
        for hook in hooks:
            if hook is None:
                continue
            # A weak proxy avoids a trainer <-> hook reference cycle.
            hook.trainer = weakref.proxy(self)
            self._hooks.append(hook)

    def _call(self, point: str) -> None:
        for hook in self._hooks:
            getattr(hook, point)()

    # ------------------------------------------------------------------ loop
    @property
    def epoch_float(self) -> float:
        """Progress in epochs at the current position (used by the lr schedule)."""
        return self.epoch + self.iter / self.iters_per_epoch

    def start_epoch(self) -> None:
        """Called at the start of each epoch (also when resuming in the middle of one), before the hooks."""

    def run_step(self) -> None:
        raise NotImplementedError

    def release_data(self) -> None:
        """Called when training ends, normally or not: stop data workers that outlive an epoch."""

    def train(self) -> None:
        """Train from the current position (0, 0 or a resumed one) to the end of ``max_epoch``."""
        logger.info(
            "training from epoch %d iteration %d to epoch %d (%d iterations per epoch)",
            self.epoch,
            self.iter,
            self.max_epoch,
            self.iters_per_epoch,
        )
        self._call("before_train")
        try:
            while self.epoch < self.max_epoch:
                self.start_epoch()
                self._call("before_epoch")
                while self.iter < self.iters_per_epoch:
                    self._call("before_step")
                    self.run_step()
                    self.iter += 1
                    self.step += 1
                    self._call("after_step")
                self._call("after_epoch")
                self.epoch += 1
                self.iter = 0
        finally:
            self._call("after_train")
            self.release_data()

    # ------------------------------------------------------------------ state
    def position(self, epoch_done: bool = False) -> dict[str, int]:
        """Where a resumed run continues: the next epoch when ``epoch_done`` (called from ``after_epoch``)."""
        if epoch_done:
            return {"epoch": self.epoch + 1, "iter": 0, "step": self.step}
        return {"epoch": self.epoch, "iter": self.iter, "step": self.step}

    def hooks_state_dict(self) -> dict[str, Any]:
        return {h.name: s for h in self._hooks if (s := h.state_dict())}

    def load_hooks_state_dict(self, states: dict[str, Any]) -> None:
        for hook in self._hooks:
            if hook.name in states:
                hook.load_state_dict(states[hook.name])
