"""``train`` and ``test`` jobs of one process (run on every rank by :func:`mvit.runtime.launch.launch`)."""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable, Optional

import torch
from fvcore.common.config import CfgNode
from torch import nn
from torch.utils.data import Dataset

from ..checkpoint import load_checkpoint, read_checkpoint
from ..checkpoint.state import atomic_save, checkpoint_dir, find_resume_checkpoint, is_training_state
from ..data.loader import build_loader
from ..data.registry import build_dataset
from ..errors import UserError
from ..runtime.lock import output_dir_lock
from ..utils.distributed import get_device, get_rank, get_world_size, is_main_process, synchronize
from ..utils.logging import progress_enabled, setup_logging
from ..utils.rng import derive_seed, seed_all
from . import hooks as H
from .backends import configure_backends
from .batch import adopt_launcher_layout, batch_layout
from .evaluation import evaluate
from .trainer import ClassificationTrainer, amp_dtype_from_cfg

__all__ = ["checkpoint_dir", "run", "test", "train"]

logger = logging.getLogger(__name__)

ModelBuilder = Callable[[CfgNode], nn.Module]


def _default_builder() -> ModelBuilder:
    from ..api import create_model

    return create_model


def _setup(cfg: CfgNode) -> torch.device:
    rank = get_rank()
    if is_main_process():
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    synchronize()
    setup_logging(cfg.OUTPUT_DIR, rank)
    device = get_device(cfg)
    configure_backends(cfg, device)
    return device


def _append_jsonl(cfg: CfgNode, record: dict[str, Any]) -> None:
    if is_main_process():
        with open(os.path.join(cfg.OUTPUT_DIR, "metrics.jsonl"), "a") as f:
            f.write(H.json_line(record) + "\n")


def _check_classes(cfg: CfgNode, dataset: Dataset, what: str) -> Optional[list[str]]:
    classes = getattr(dataset, "classes", None)
    if classes is not None and len(classes) > cfg.MODEL.NUM_CLASSES:
        raise UserError(
            f"{what} has {len(classes)} classes but MODEL.NUM_CLASSES is {cfg.MODEL.NUM_CLASSES}; set "
            f"MODEL.NUM_CLASSES {len(classes)}"
        )
    return list(classes) if classes is not None else None


def train(cfg: CfgNode, build_model: Optional[ModelBuilder] = None) -> dict[str, Any]:
    """Train from scratch, from ``TRAIN.CHECKPOINT_FILE_PATH`` (fine-tuning; a head of another size is
    re-initialised) or, with ``TRAIN.AUTO_RESUME``, from the newest valid checkpoint in ``OUTPUT_DIR``.

    The main process holds ``OUTPUT_DIR/.lock`` (:mod:`mvit.runtime.lock`) from before anything is written until
    the end: a second run on the same folder stops with one line naming the owner.

    Returns:
        The last evaluation, ``{"val": metrics, "val_ema": metrics}``.
    """
    # Global rank 0 only: the other processes of a job write nothing but their own log files.
    with output_dir_lock(cfg.OUTPUT_DIR, enabled=is_main_process()):
        return _train(cfg, build_model)


def _train(cfg: CfgNode, build_model: Optional[ModelBuilder]) -> dict[str, Any]:
    build_model = build_model or _default_builder()
    device = _setup(cfg)
    rank, world = get_rank(), get_world_size()
    cfg = adopt_launcher_layout(cfg, world, rank)
    layout = batch_layout(cfg)
    logger.info("%s", layout.describe())
    if is_main_process():
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    accum = cfg.TRAIN.GRAD_ACCUM_STEPS
    items = layout.micro_batch

    train_set = build_dataset(cfg.TRAIN.DATASET, cfg, "train")
    class_names = _check_classes(cfg, train_set, f"{cfg.TRAIN.DATASET} train")
    val_set = build_dataset(cfg.TRAIN.DATASET, cfg, "val") if cfg.TRAIN.EVAL_PERIOD > 0 else None
    if val_set is not None:
        _check_classes(cfg, val_set, f"{cfg.TRAIN.DATASET} val")

    seed_all(cfg.RNG_SEED)  # identical initial weights on every rank
    model = build_model(cfg).to(device)
    resume = find_resume_checkpoint(checkpoint_dir(cfg)) if cfg.TRAIN.AUTO_RESUME else None
    if resume is None and cfg.TRAIN.CHECKPOINT_FILE_PATH:
        logger.info("initialising from %s", cfg.TRAIN.CHECKPOINT_FILE_PATH)
        load_checkpoint(model, cfg.TRAIN.CHECKPOINT_FILE_PATH, strict=False)
    seed_all(derive_seed(cfg.RNG_SEED, rank))  # per-rank stream for drop path and mixup

    loader_kw = dict(
        seed=cfg.RNG_SEED,
        rank=rank,
        world_size=world,
        num_workers=cfg.DATA_LOADER.NUM_WORKERS,
        pin_memory=cfg.DATA_LOADER.PIN_MEMORY and device.type == "cuda",
    )
    train_loader = build_loader(train_set, batch_size=items, train=True, **loader_kw)
    if len(train_loader.sampler) < items * accum:
        raise UserError(
            f"the training set ({len(train_set)} items, {len(train_loader.sampler)} per process) is smaller than one "
            f"step ({items * accum} items per process): lower TRAIN.BATCH_SIZE"
        )
    trainer = ClassificationTrainer(
        cfg, model, train_loader, device=device, items_per_batch=items, accum_steps=accum, class_names=class_names
    )
    progress = progress_enabled(rank)
    ema = H.EMA(model, cfg.TRAIN.EMA_DECAY, cfg.TRAIN.EMA_WARMUP) if cfg.TRAIN.EMA_ENABLE else None
    val_hook = None
    if val_set is not None:
        val_loader = build_loader(val_set, batch_size=layout.test_per_process, train=False, **loader_kw)
        val_hook = H.EvalHook(val_loader, cfg.TRAIN.EVAL_PERIOD, ema=ema, progress=progress)
    trainer.register_hooks(
        [
            H.LRScheduler(),
            *getattr(train_set, "train_hooks", list)(),  # e.g. a data-health check, before eval and checkpoints
            ema,
            H.ProgressBar(progress),
            val_hook,
            H.MetricsWriter(cfg.OUTPUT_DIR, cfg.LOG_PERIOD, tensorboard=cfg.TRAIN.TENSORBOARD),
            H.Checkpointer(checkpoint_dir(cfg), cfg.TRAIN.CHECKPOINT_PERIOD, cfg.TRAIN.CHECKPOINT_ITER_PERIOD),
        ]
    )
    if resume is not None:
        path, state = resume
        trainer.load_state_dict(state, source=path)  # restores the RNG states too: nothing random may run after this
        trainer.storage.last_checkpoint = path
        logger.info("resumed from %s at epoch %d iteration %d", path, trainer.epoch, trainer.iter)
    trainer.train()
    return trainer.storage.latest_eval


def _load_for_test(cfg: CfgNode, model: nn.Module) -> tuple[Optional[str], Optional[dict[str, Any]]]:
    """Load the weights to test; returns their path and the EMA weights when the file has them."""
    path = cfg.TEST.CHECKPOINT_FILE_PATH
    if not path:
        found = find_resume_checkpoint(checkpoint_dir(cfg))
        if found is None:
            logger.warning(
                "no TEST.CHECKPOINT_FILE_PATH and no checkpoint in %s: testing initial weights", checkpoint_dir(cfg)
            )
            return None, None
        path, state = found
        model.load_state_dict(state["model"])
        return path, state.get("hooks", {}).get("ema", {}).get("model")
    obj = read_checkpoint(path)
    if is_training_state(obj):  # this engine's file: already read, load directly
        model.load_state_dict(obj["model"])
        return path, obj.get("hooks", {}).get("ema", {}).get("model")
    del obj
    load_checkpoint(model, path, strict=True)  # any other format: the core converts it
    ema = None
    return path, ema


def test(cfg: CfgNode, build_model: Optional[ModelBuilder] = None) -> dict[str, Any]:
    """Evaluate ``TEST.CHECKPOINT_FILE_PATH`` (any format the core loads), else the newest checkpoint of
    ``OUTPUT_DIR``, on the ``test`` split of ``TEST.DATASET`` (and its EMA weights when the file has them).

    Per-item outputs of multi-view datasets are saved to ``OUTPUT_DIR/test_outputs.pt``.

    Returns:
        ``{"test": metrics, "test_ema": metrics}``.
    """
    build_model = build_model or _default_builder()
    device = _setup(cfg)
    cfg = adopt_launcher_layout(cfg, get_world_size(), get_rank())
    test_set = build_dataset(cfg.TEST.DATASET, cfg, "test")
    _check_classes(cfg, test_set, f"{cfg.TEST.DATASET} test")
    seed_all(cfg.RNG_SEED)
    model = build_model(cfg).to(device)
    path, ema_state = _load_for_test(cfg, model)
    models = {"test": model}
    if ema_state is not None:
        ema_model = build_model(cfg).to(device)
        ema_model.load_state_dict(ema_state)
        models["test_ema"] = ema_model
    loader = build_loader(
        test_set,
        # TEST.BATCH_SIZE is the batch of one machine, as in PySlowFast.
        batch_size=max(1, math.ceil(cfg.TEST.BATCH_SIZE / max(1, cfg.NUM_GPUS))),
        train=False,
        seed=cfg.RNG_SEED,
        rank=get_rank(),
        world_size=get_world_size(),
        num_workers=cfg.DATA_LOADER.NUM_WORKERS,
        pin_memory=cfg.DATA_LOADER.PIN_MEMORY and device.type == "cuda",
    )
    amp = amp_dtype_from_cfg(cfg, device)
    results: dict[str, Any] = {}
    for split, net in models.items():
        res = evaluate(net, loader, device=device, amp_dtype=amp, progress=progress_enabled(get_rank()), desc=split)
        results[split] = res.metrics
        logger.info(
            "%s (%s): top-1 %.2f%% top-5 %.2f%% over %d samples",
            split,
            path or "initial weights",
            res.metrics["top1"],
            res.metrics["top5"],
            res.metrics["num_samples"],
        )
        _append_jsonl(cfg, {"split": split, "checkpoint": path, **res.metrics})
        if res.outputs and is_main_process():
            atomic_save(res.outputs, os.path.join(cfg.OUTPUT_DIR, f"{split}_outputs.pt"))
    return results


def run(cfg: CfgNode, build_model: Optional[ModelBuilder] = None) -> dict[str, Any]:
    """Train and/or test according to ``TRAIN.ENABLE`` / ``TEST.ENABLE`` (PySlowFast's ``run_net``)."""
    results: dict[str, Any] = {}
    if cfg.TRAIN.ENABLE:
        results.update(train(cfg, build_model))
    if cfg.TEST.ENABLE:
        results.update(test(cfg, build_model))
    return results
