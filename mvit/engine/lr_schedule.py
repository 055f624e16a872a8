"""Learning-rate schedule as a pure function of the (fractional) epoch: nothing to checkpoint."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fvcore.common.config import CfgNode

from ..errors import ConfigError
from .optimizer import lr_scale_factor

__all__ = ["LRSchedule", "build_lr_schedule"]


@dataclass(frozen=True)
class LRSchedule:
    """Linear warmup from ``warmup_start_lr`` to the policy's value at ``warmup_epochs``, then the policy.

    Policies: ``"cosine"`` (from ``base_lr`` to ``end_lr`` at ``max_epoch``; over the epochs after warmup when
    ``cosine_after_warmup``, as MViTv2 does, else over all epochs) and ``"constant"``.
    """

    base_lr: float
    max_epoch: float
    policy: str = "cosine"
    end_lr: float = 0.0
    warmup_epochs: float = 0.0
    warmup_start_lr: float = 0.0
    cosine_after_warmup: bool = True

    def __post_init__(self) -> None:
        if self.policy not in ("cosine", "constant"):
            raise ConfigError(f"SOLVER.LR_POLICY: unknown policy {self.policy!r} (cosine, constant)")

    def _policy(self, epoch: float) -> float:
        if self.policy == "constant":
            return self.base_lr
        start = self.warmup_epochs if self.cosine_after_warmup else 0.0
        span = max(self.max_epoch - start, 1e-12)
        progress = min(max((epoch - start) / span, 0.0), 1.0)
        return self.end_lr + (self.base_lr - self.end_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def __call__(self, epoch: float) -> float:
        """The lr at ``epoch`` (``epoch + iteration / iterations_per_epoch`` during training)."""
        if epoch < self.warmup_epochs:
            target = self._policy(self.warmup_epochs)
            return self.warmup_start_lr + (target - self.warmup_start_lr) * epoch / self.warmup_epochs
        return self._policy(epoch)


def build_lr_schedule(cfg: CfgNode) -> LRSchedule:
    """The schedule of ``cfg.SOLVER`` with every lr multiplied by :func:`~mvit.engine.optimizer.lr_scale_factor`."""
    s, k = cfg.SOLVER, lr_scale_factor(cfg)
    return LRSchedule(
        base_lr=s.BASE_LR * k,
        max_epoch=float(s.MAX_EPOCH),
        policy=s.LR_POLICY,
        end_lr=s.COSINE_END_LR * k,
        warmup_epochs=float(s.WARMUP_EPOCHS),
        warmup_start_lr=s.WARMUP_START_LR * k,
        cosine_after_warmup=s.COSINE_AFTER_WARMUP,
    )
