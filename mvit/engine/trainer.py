"""The supervised classification trainer shared by the image and video projects."""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Optional

import torch
from fvcore.common.config import CfgNode
from timm.data import Mixup
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..checkpoint.state import STATE_FORMAT
from ..config import ConfigError
from ..utils.distributed import all_gather_object, get_rank, get_world_size, is_distributed
from ..utils.rng import capture_rng_state, restore_rng_state
from .evaluation import autocast_context
from .lr_schedule import build_lr_schedule
from .meters import topk_correct
from .optimizer import build_optimizer
from .train_loop import TrainerBase

__all__ = ["ClassificationTrainer", "amp_dtype_from_cfg", "build_mixup"]

logger = logging.getLogger(__name__)

_AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype_from_cfg(cfg: CfgNode, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype of ``TRAIN.MIXED_PRECISION`` ("fp32" -> None); fp16 needs a GPU."""
    key = str(cfg.TRAIN.MIXED_PRECISION).lower()
    if key not in _AMP:
        raise ConfigError(f"TRAIN.MIXED_PRECISION: {cfg.TRAIN.MIXED_PRECISION!r} is not one of {list(_AMP)}")
    if key == "fp16" and device.type != "cuda":
        raise ConfigError("TRAIN.MIXED_PRECISION fp16 needs a GPU; use bf16 on the CPU")
    return _AMP[key]


def build_mixup(cfg: CfgNode) -> Optional[Mixup]:
    """timm's batch-wise mixup / cutmix with label smoothing, or ``None`` when ``MIXUP.ENABLE`` is off."""
    m = cfg.MIXUP
    if not m.ENABLE:
        return None
    return Mixup(
        mixup_alpha=m.ALPHA,
        cutmix_alpha=m.CUTMIX_ALPHA,
        prob=m.PROB,
        switch_prob=m.SWITCH_PROB,
        label_smoothing=m.LABEL_SMOOTH_VALUE,
        num_classes=cfg.MODEL.NUM_CLASSES,
    )


LOSS_FUNCS = ("soft_cross_entropy", "cross_entropy", "binary_cross_entropy")


def build_criterion(cfg: CfgNode, soft_targets: bool) -> nn.Module:
    """The training loss named by ``MODEL.LOSS_FUNC`` (timm's losses, as the official recipe uses them).

    - ``soft_cross_entropy`` (default): soft-target cross-entropy for mixup / cutmix targets (already smoothed
      there), label-smoothed cross-entropy for hard labels;
    - ``cross_entropy``: ``nn.CrossEntropyLoss`` with ``MIXUP.LABEL_SMOOTH_VALUE`` (it takes hard labels, and
      probability targets as they come from mixup);
    - ``binary_cross_entropy``: per-class sigmoid BCE (timm's, as in DeiT III), smoothing hard labels only.
    """
    name, smoothing = cfg.MODEL.LOSS_FUNC, cfg.MIXUP.LABEL_SMOOTH_VALUE
    if name == "soft_cross_entropy":
        return SoftTargetCrossEntropy() if soft_targets else nn.CrossEntropyLoss(label_smoothing=smoothing)
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=0.0 if soft_targets else smoothing)
    if name == "binary_cross_entropy":
        return BinaryCrossEntropy(smoothing=smoothing)
    raise ConfigError(f"MODEL.LOSS_FUNC: unknown loss {name!r}; choose one of {', '.join(LOSS_FUNCS)}")


class ClassificationTrainer(TrainerBase):
    """One optimizer step = ``accum_steps`` micro-batches: forward under autocast, (scaled) backward, L2 gradient
    clipping, step. Targets are soft (mixup / cutmix + label smoothing, soft-target cross-entropy) when
    ``MIXUP.ENABLE``, else hard labels with label-smoothed cross-entropy.

    Args:
        model: the unwrapped model, already on ``device`` (wrapped in DDP here when distributed).
        train_loader: engine loader (:func:`~mvit.engine.data.build_loader`) giving ``(inputs, labels, indices)``.
        items_per_batch: dataset items per micro-batch on this rank (to skip consumed items on resume).
    """

    def __init__(
        self,
        cfg: CfgNode,
        model: nn.Module,
        train_loader: DataLoader,
        *,
        device: torch.device,
        items_per_batch: int,
        accum_steps: int = 1,
        class_names: Optional[list[str]] = None,
    ) -> None:
        batches = len(train_loader.sampler) // items_per_batch
        super().__init__(iters_per_epoch=batches // accum_steps, max_epoch=cfg.SOLVER.MAX_EPOCH)
        self.cfg, self.model, self.device = cfg, model, device
        self.train_loader, self.items_per_batch, self.accum_steps = train_loader, items_per_batch, accum_steps
        self.class_names = class_names
        self.ddp_model: nn.Module = model
        if is_distributed():
            ids = [device.index] if device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)
        self.optimizer = build_optimizer(cfg, model)
        self.lr_schedule = build_lr_schedule(cfg)
        self.amp_dtype = amp_dtype_from_cfg(cfg, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.mixup = build_mixup(cfg)
        self.criterion = build_criterion(cfg, soft_targets=self.mixup is not None)
        self.clip = cfg.SOLVER.CLIP_GRAD_L2NORM
        self._data_iter: Optional[Any] = None

    # ------------------------------------------------------------------ loop
    def start_epoch(self) -> None:
        sampler = self.train_loader.sampler
        sampler.set_epoch(self.epoch, start=self.iter * self.accum_steps * self.items_per_batch)
        self._data_iter = iter(self.train_loader)
        if self.iter == 0:
            self.storage.epoch_meter.reset()

    def release_data(self) -> None:
        # Persistent workers ignore SIGTERM (SLURM preemption): stop them now rather than at interpreter exit.
        iterator, self._data_iter = self._data_iter, None
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.train_loader._iterator = None

    def set_lr(self, lr: float) -> None:
        """Set every parameter group's lr to ``lr`` times its layer-decay scale."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.storage.lr = lr

    def run_step(self) -> None:
        self.ddp_model.train()
        loss_sum = correct = rows = 0.0
        for micro in range(self.accum_steps):
            inputs, labels, _ = next(self._data_iter)
            inputs = inputs.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            targets = labels
            if self.mixup is not None:
                inputs, targets = self.mixup(inputs, labels)  # targets: (B, num_classes) soft
            last = micro == self.accum_steps - 1
            sync = contextlib.nullcontext() if last or not is_distributed() else self.ddp_model.no_sync()
            with sync:
                with autocast_context(self.device, self.amp_dtype):
                    logits = self.ddp_model(inputs)
                    loss = self.criterion(logits.float(), targets)
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(
                        f"loss is {loss.item()} at epoch {self.epoch} iteration {self.iter}; lower SOLVER.BASE_LR "
                        "or check the data"
                    )
                self.scaler.scale(loss / self.accum_steps).backward()
            loss_sum += loss.item() * labels.shape[0]
            rows += labels.shape[0]
            if self.mixup is None:
                correct += topk_correct(logits.detach(), labels, (1,))[0]
        grad_norm = None
        if self.clip and self.clip > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

        values = {"loss": loss_sum / rows}
        if self.mixup is None:
            values["top1"] = 100.0 * correct / rows
        if grad_norm is not None:
            values["grad_norm"] = float(grad_norm)
        self.storage.last_values = values
        for meter in (self.storage.window_meter, self.storage.epoch_meter):
            meter.update(int(rows), **values)

    # ------------------------------------------------------------------ state
    def state_dict(self, epoch_done: bool = False) -> dict[str, Any]:
        """The whole training state (a collective: every rank's RNG state is gathered)."""
        rng = all_gather_object(capture_rng_state())
        return {
            "format": STATE_FORMAT,
            "version": 1,
            **self.position(epoch_done),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "hooks": self.hooks_state_dict(),
            "rng": rng,
            "meters": {"sums": dict(self.storage.epoch_meter.sums), "counts": dict(self.storage.epoch_meter.counts)}
            if not epoch_done
            else {},
            "metrics": self.storage.latest_eval,
            "cfg": self.cfg.dump(),
            "class_names": self.class_names,
            "world_size": get_world_size(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore everything :meth:`state_dict` saved, including this rank's RNG state."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.iter, self.step = int(state["epoch"]), int(state["iter"]), int(state["step"])
        self.load_hooks_state_dict(state.get("hooks", {}))
        meters = state.get("meters") or {}
        self.storage.epoch_meter.sums = dict(meters.get("sums", {}))
        self.storage.epoch_meter.counts = dict(meters.get("counts", {}))
        self.storage.latest_eval = dict(state.get("metrics") or {})
        rng = state.get("rng") or []
        if len(rng) == get_world_size():
            restore_rng_state(rng[get_rank()])
        else:
            logger.warning(
                "checkpoint was written by %d processes, this run has %d: random states are not restored, so the "
                "run will not repeat the original one exactly",
                len(rng),
                get_world_size(),
            )
