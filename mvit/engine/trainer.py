"""The supervised classification trainer shared by the image and video projects."""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Optional

import torch
import torch.distributed as dist
import yaml
from fvcore.common.config import CfgNode
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..checkpoint.state import STATE_FORMAT
from ..data.loader import LoaderWorkerError, describe_worker_failure, loader_workers, shutdown_loader
from ..errors import CheckpointError, ConfigError, UserError
from ..utils.distributed import all_gather_object, get_rank, get_world_size, is_distributed
from ..utils.rng import capture_rng_state, restore_rng_state
from .batch import mixup_pairs_samples
from .evaluation import autocast_context
from .lr_schedule import build_lr_schedule
from .meters import topk_correct_counts
from .mixup import BatchMixup
from .optimizer import build_optimizer
from .train_loop import TrainerBase

__all__ = ["NONFINITE_MODES", "ClassificationTrainer", "NonFiniteLossError", "amp_dtype_from_cfg", "build_mixup"]

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


def build_mixup(cfg: CfgNode) -> Optional[BatchMixup]:
    """Batch-wise mixup / cutmix with label smoothing (timm's; a clip's cutmix box spans every frame), or ``None``
    when it would mix nothing (``MIXUP.ENABLE`` off, ``PROB`` 0, both alphas 0): hard labels then take the same
    smoothing in the loss (:func:`build_criterion`)."""
    m = cfg.MIXUP
    if not mixup_pairs_samples(cfg):
        return None
    return BatchMixup(
        mixup_alpha=m.ALPHA,
        cutmix_alpha=m.CUTMIX_ALPHA,
        prob=m.PROB,
        switch_prob=m.SWITCH_PROB,
        label_smoothing=m.LABEL_SMOOTH_VALUE,
        num_classes=cfg.MODEL.NUM_CLASSES,
    )


# PySlowFast's misc.check_nan_losses stops on a NaN loss (a RuntimeError, inf passes); "stop" does the same
# for NaN and inf with a message saying where and what to resume from, "skip" drops the step's update instead.
NONFINITE_MODES = ("stop", "skip")


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss was NaN or inf (``TRAIN.NONFINITE_LOSS stop``, or too many skipped steps); one line, exit 2."""


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


def _items_per_step_of(cfg_text: Optional[str]) -> Optional[int]:
    """Items per step and process of a config dump (files written before ``items_per_step`` was stored)."""
    try:
        node = yaml.safe_load(cfg_text or "") or {}
        return int(node["TRAIN"]["BATCH_SIZE"]) // max(1, int(node["NUM_GPUS"]))
    except (yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


class ClassificationTrainer(TrainerBase):
    """One optimizer step = ``accum_steps`` micro-batches: forward under autocast, (scaled) backward, L2 gradient
    clipping, step. Targets are soft (mixup / cutmix + label smoothing, soft-target cross-entropy) when
    ``MIXUP.ENABLE``, else hard labels with label-smoothed cross-entropy.

    Args:
        model: the unwrapped model, already on ``device`` (wrapped in DDP here when distributed).
        train_loader: engine loader (:func:`~mvit.data.loader.build_loader`) giving ``(inputs, labels, indices)``.
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
        # GradScaler.step skips optimizer.step when a gradient overflowed (fp16): a post-hook tells, without a
        # host read of the scale, whether this step's update happened.
        self._optimizer_stepped = False
        self.optimizer.register_step_post_hook(self._count_optimizer_step)
        self.mixup = build_mixup(cfg)
        self.criterion = build_criterion(cfg, soft_targets=self.mixup is not None)
        self.clip = cfg.SOLVER.CLIP_GRAD_L2NORM
        self.nonfinite_mode = str(cfg.TRAIN.NONFINITE_LOSS).lower()
        if self.nonfinite_mode not in NONFINITE_MODES:
            raise ConfigError(
                f"TRAIN.NONFINITE_LOSS: {cfg.TRAIN.NONFINITE_LOSS!r} is not one of {list(NONFINITE_MODES)}"
            )
        self.max_skips_in_a_row = int(cfg.TRAIN.NONFINITE_MAX_SKIPS)
        self._skips_in_a_row = 0
        self._data_iter: Optional[Any] = None
        self._workers: list[Any] = []

    # ------------------------------------------------------------------ loop
    def start_epoch(self) -> None:
        sampler = self.train_loader.sampler
        sampler.set_epoch(self.epoch, start=self.iter * self.accum_steps * self.items_per_batch)
        self._data_iter = iter(self.train_loader)
        self._workers = loader_workers(self._data_iter)
        if self.iter == 0:
            self.storage.epoch_meter.reset()
            self.storage.epoch_skipped_steps = self.storage.epoch_overflow_steps = 0

    def release_data(self) -> None:
        # Persistent workers ignore SIGTERM (SLURM preemption): stop them now rather than at interpreter exit.
        iterator, self._data_iter = self._data_iter, None
        shutdown_loader(self.train_loader, iterator)

    def train(self) -> None:
        """:meth:`TrainerBase.train`; a data-loader worker that died becomes one line (:class:`LoaderWorkerError`)."""
        try:
            super().train()
        except RuntimeError as err:
            # torch's SIGCHLD handler raises wherever the main thread is (a forward, a checkpoint write), and a
            # failed write wraps it in a CheckpointError: look at the cause as well.
            cause = err if describe_worker_failure(err) else err.__cause__
            failure = describe_worker_failure(cause, self._workers) if cause is not None else None
            if failure is None:
                raise
            raise LoaderWorkerError(
                f"{failure} at {self._where()}: lower DATA_LOADER.NUM_WORKERS or TRAIN.BATCH_SIZE, then run the "
                f"same command to resume (last checkpoint: {self._resume_hint()})"
            ) from err

    def set_lr(self, lr: float) -> None:
        """Set every parameter group's lr to ``lr`` times its layer-decay scale."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.storage.lr = lr

    def _where(self) -> str:
        return f"epoch {self.epoch + 1} iteration {self.iter + 1}/{self.iters_per_epoch} (step {self.step + 1})"

    def _resume_hint(self) -> str:
        return self.storage.last_checkpoint or "no checkpoint yet"

    def _count_optimizer_step(self, *_args: Any) -> None:
        self._optimizer_stepped = True

    def _nonfinite_step(self, value: float) -> None:
        """A step whose loss was not finite on some rank: stop, or count it as skipped (``TRAIN.NONFINITE_LOSS``)."""
        storage = self.storage
        what = f"loss is {value}" if not math.isfinite(value) else "loss is not finite on another process"
        where = f"{what} at {self._where()}"
        if self.nonfinite_mode == "stop":
            raise NonFiniteLossError(
                f"{where}; last good checkpoint: {self._resume_hint()}; lower SOLVER.BASE_LR, check the data, or "
                "set TRAIN.NONFINITE_LOSS skip"
            )
        storage.step_skipped = True
        storage.skipped_steps += 1
        storage.epoch_skipped_steps += 1
        self._skips_in_a_row += 1
        logger.warning(
            "%s: step skipped (%d in a row, %d this epoch, %d in all)",
            where,
            self._skips_in_a_row,
            storage.epoch_skipped_steps,
            storage.skipped_steps,
        )
        if self._skips_in_a_row > self.max_skips_in_a_row:
            raise NonFiniteLossError(
                f"{where}: {self._skips_in_a_row} steps in a row skipped (more than TRAIN.NONFINITE_MAX_SKIPS "
                f"{self.max_skips_in_a_row}); last good checkpoint: {self._resume_hint()}; lower SOLVER.BASE_LR "
                "or check the data"
            )
        if storage.epoch_skipped_steps == self.iters_per_epoch:
            raise NonFiniteLossError(
                f"{where}: every step of epoch {self.epoch + 1} was skipped; last good checkpoint: "
                f"{self._resume_hint()}; lower SOLVER.BASE_LR or check the data"
            )

    def run_step(self) -> None:
        # Host reads of device values (each one stalls the CPU until the GPU has caught up): one per step, below,
        # where the finiteness of the loss decides between stepping and skipping (``TRAIN.NONFINITE_LOSS``). It
        # cannot move to the device: a stateful optimizer (AdamW's moments, step count, weight decay) is not left
        # unchanged by stepping on zeroed gradients. The step's losses and top-1 counts come back in that same read;
        # the gradient norm stays on the device, summed in the meters until a log line or an epoch end reads it.
        # (fp16 adds GradScaler.step's own read of its inf check; DDP adds the preemption agreement's.)
        self.ddp_model.train()
        self.storage.step_skipped = self.storage.scaler_skipped = False
        losses: list[torch.Tensor] = []
        corrects: list[torch.Tensor] = []
        sizes: list[int] = []
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
                # Every micro-batch runs backward, finite or not (every rank the same, as DDP needs): the step is
                # decided once, below, and a skipped step's gradients are dropped.
                self.scaler.scale(loss / self.accum_steps).backward()
            losses.append(loss.detach())
            sizes.append(labels.shape[0])
            if self.mixup is None:
                corrects.append(topk_correct_counts(logits.detach(), labels, (1,))[0])
        finite, loss_values, correct_values = self._read_step(losses, corrects)
        if not finite:
            # No optimizer or scaler step: the weights, the optimizer state and the loss scale stay as they were.
            self.optimizer.zero_grad(set_to_none=True)
            bad = [v for v in loss_values if not math.isfinite(v)]
            self._nonfinite_step(bad[0] if bad else 0.0)  # this rank's value (finite when another rank's was not)
            return
        self._skips_in_a_row = 0
        grad_norm = None
        if self.clip and self.clip > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self._optimizer_stepped = False
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if not self._optimizer_stepped:
            # fp16 overflow: the scaler skipped the update and lowered the scale; the EMA skips it too, and the
            # gradient norm (inf / NaN) stays out of the logs (the step is counted as ``overflow_steps``).
            self.storage.step_skipped = self.storage.scaler_skipped = True
            self.storage.epoch_overflow_steps += 1
            grad_norm = None

        # The same float64 arithmetic, in the same order, as when each value was read on its own.
        loss_sum = correct = rows = 0.0
        for i, size in enumerate(sizes):
            loss_sum += loss_values[i] * size
            rows += size
            if correct_values:
                correct += correct_values[i]
        values: dict[str, Any] = {"loss": loss_sum / rows}
        if self.mixup is None:
            values["top1"] = 100.0 * correct / rows
        if grad_norm is not None:
            values["grad_norm"] = grad_norm.detach()  # a device scalar: the meters read it per log window
        self.storage.last_values = values
        for meter in (self.storage.window_meter, self.storage.epoch_meter):
            meter.update(int(rows), **values)

    def _read_step(
        self, losses: list[torch.Tensor], corrects: list[torch.Tensor]
    ) -> tuple[bool, list[float], list[float]]:
        """The step's one host read: whether every loss was finite on every rank, this rank's micro-batch losses and
        top-1 counts."""
        # Every rank must take the same branch (step or skip), or the others wait in DDP's all-reduce forever.
        flag = torch.stack([torch.isfinite(loss).all() for loss in losses]).all().to(torch.float32).reshape(1)
        if is_distributed():
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        read = torch.cat([flag.double(), torch.stack(losses).double(), *[c.double().reshape(1) for c in corrects]])
        values = read.tolist()
        n = len(losses)
        return values[0] > 0, values[1 : 1 + n], values[1 + n :]

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
            "meters": self.storage.epoch_meter.state_dict() if not epoch_done else {},
            "metrics": self.storage.latest_eval,
            "skipped_steps": {
                "total": self.storage.skipped_steps,
                "epoch": 0 if epoch_done else self.storage.epoch_skipped_steps,
                "in_a_row": self._skips_in_a_row,
                "overflow_epoch": 0 if epoch_done else self.storage.epoch_overflow_steps,
            },
            "cfg": self.cfg.dump(),
            "class_names": self.class_names,
            "world_size": get_world_size(),
            "items_per_step": self.items_per_step,
        }

    @property
    def items_per_step(self) -> int:
        """Dataset items of one optimizer step on this process (the unit of the sampler's skip on resume)."""
        return self.items_per_batch * self.accum_steps

    def _check_layout(self, state: dict[str, Any], source: str) -> None:
        """A mid-epoch state resumes only on the layout that wrote it; an epoch-end state on any layout.

        In the middle of an epoch the data position is ``iter`` steps of ``items_per_step`` items on each of
        ``world_size`` shards, and ``iter`` counts steps of that size in the lr schedule: on another world size or
        batch, items would be repeated or skipped and the schedule would jump. At an epoch end the position is a
        whole epoch: the next one is sharded afresh and the schedule (in epochs) continues where it was.
        """
        world, items = get_world_size(), self.items_per_step
        saved_world = int(state.get("world_size", world))
        saved_items = state.get("items_per_step") or _items_per_step_of(state.get("cfg"))
        if saved_world == world and saved_items in (None, items):
            return
        saved = (
            f"{saved_world} process(es) x {saved_items} items per step" if saved_items else f"{saved_world} process(es)"
        )
        saved_global = f" (global batch {saved_world * saved_items})" if saved_items else ""
        here = f"{world} process(es) x {items} items per step (global batch {world * items})"
        epoch, it = int(state["epoch"]), int(state["iter"])
        if it > 0:
            raise CheckpointError(
                f"cannot resume {source} in the middle of epoch {epoch + 1} (iteration {it}) on another layout: it "
                f"was written by {saved}{saved_global}, this run has {here}; finish that epoch with the saved "
                "NUM_GPUS x NUM_SHARDS, TRAIN.BATCH_SIZE and TRAIN.GRAD_ACCUM_STEPS, then change them (a checkpoint "
                "written at an epoch end resumes on any layout)"
            )
        logger.info(
            "resuming at the start of epoch %d on another layout: %s%s before, %s now (lr scale and iterations per "
            "epoch follow the new layout; the step counter continues)",
            epoch + 1,
            saved,
            saved_global,
            here,
        )

    def load_state_dict(self, state: dict[str, Any], source: str = "the checkpoint") -> None:
        """Restore everything :meth:`state_dict` saved, including this rank's RNG state.

        Raises:
            CheckpointError: a mid-epoch state written on another world size or batch per process (one line).
        """
        self._check_layout(state, source)
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
        skipped = state.get("skipped_steps") or {}
        self.storage.skipped_steps = int(skipped.get("total", 0))
        self.storage.epoch_skipped_steps = int(skipped.get("epoch", 0))
        self._skips_in_a_row = int(skipped.get("in_a_row", 0))
        self.storage.epoch_overflow_steps = int(skipped.get("overflow_epoch", 0))
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
