"""Batch arithmetic of a training job, with PySlowFast's (and facebookresearch/mvit's) meaning of the keys.

``TRAIN.BATCH_SIZE`` and ``TEST.BATCH_SIZE`` are the batch of ONE machine: divided among its ``NUM_GPUS``
processes (one process when ``NUM_GPUS`` is 0), so the global batch of an optimizer step is
``TRAIN.BATCH_SIZE x NUM_SHARDS``. They count items (images or clips): with repeated augmentation each item
gives ``AUG.NUM_SAMPLE`` rows of the model's batch, as PySlowFast's loader collates them. An optimizer step
accumulates ``TRAIN.GRAD_ACCUM_STEPS`` micro-batches.

The lr (:func:`mvit.engine.optimizer.lr_scale_factor`) is multiplied by ``NUM_SHARDS`` with
``SOLVER.BASE_LR_SCALE_NUM_SHARDS`` (the publishers' rule), or by ``global batch / SOLVER.BASE_LR_BATCH_SIZE``
(this project's linear scaling rule); at most one of the two.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

from fvcore.common.config import CfgNode

from ..errors import ConfigError

__all__ = ["BatchLayout", "adopt_launcher_layout", "batch_layout"]

logger = logging.getLogger(__name__)


def mixup_pairs_samples(cfg: CfgNode) -> bool:
    """Whether ``MIXUP`` mixes samples (pairing rows of a batch); at ``PROB`` 0 or both alphas 0 it only smooths
    labels, which the loss does for hard labels too, so the batch need not be even (SSv2 L on 8 GPUs)."""
    m = cfg.MIXUP
    return bool(m.ENABLE) and m.PROB > 0 and (m.ALPHA > 0 or m.CUTMIX_ALPHA > 0)


@dataclass(frozen=True)
class BatchLayout:
    """The numbers a config means for a job (see the module docstring).

    Attributes:
        processes_per_machine: ``max(1, NUM_GPUS)``.
        machines: ``NUM_SHARDS``.
        global_batch: items of one optimizer step over all machines (``TRAIN.BATCH_SIZE x NUM_SHARDS``).
        per_process: items of one optimizer step on one process.
        micro_batch: items of one forward pass on one process (``per_process / GRAD_ACCUM_STEPS``).
        rows: rows of the model's input of one forward pass (``micro_batch x AUG.NUM_SAMPLE``).
        test_per_process: evaluation items per forward pass on one process.
        lr_scale: factor applied to every lr of the schedule.
    """

    processes_per_machine: int
    machines: int
    global_batch: int
    per_process: int
    micro_batch: int
    rows: int
    test_per_process: int
    lr_scale: float

    @property
    def world_size(self) -> int:
        return self.processes_per_machine * self.machines

    def describe(self) -> str:
        """One line for the log."""
        return (
            f"batch: {self.global_batch} items per step = TRAIN.BATCH_SIZE {self.global_batch // self.machines} "
            f"per machine x {self.machines} machine(s); {self.per_process} per process "
            f"({self.processes_per_machine} processes per machine), {self.micro_batch} per forward pass ({self.rows} rows); "
            f"lr x {self.lr_scale:g}"
        )


def _positive(cfg: CfgNode, key: str, minimum: int = 1) -> int:
    node = cfg
    for part in key.split("."):
        node = node[part]
    if not isinstance(node, int) or isinstance(node, bool) or node < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {node!r}")
    return node


def batch_layout(cfg: CfgNode) -> BatchLayout:
    """The batch sizes and lr factor ``cfg`` means (pure arithmetic; no process group needed).

    Raises:
        ConfigError: a batch that does not divide among the processes and accumulation steps, an odd
            micro-batch with mixup, or launch keys out of range; the message names the keys.
    """
    from .optimizer import lr_scale_factor

    gpus = _positive(cfg, "NUM_GPUS", minimum=0)
    machines = _positive(cfg, "NUM_SHARDS")
    if not 0 <= cfg.SHARD_ID < machines:
        raise ConfigError(f"SHARD_ID must be in [0, NUM_SHARDS - 1] = [0, {machines - 1}], got {cfg.SHARD_ID}")
    procs = max(1, gpus)
    batch = _positive(cfg, "TRAIN.BATCH_SIZE")
    accum = _positive(cfg, "TRAIN.GRAD_ACCUM_STEPS")
    views = _positive(cfg, "AUG.NUM_SAMPLE")
    test_batch = _positive(cfg, "TEST.BATCH_SIZE")
    if batch % (procs * accum):
        raise ConfigError(
            f"TRAIN.BATCH_SIZE {batch} (the batch of one machine) must divide among NUM_GPUS {gpus} process(es) x "
            f"TRAIN.GRAD_ACCUM_STEPS {accum}: use a multiple of {procs * accum}"
        )
    per_process = batch // procs
    micro = per_process // accum
    rows = micro * views
    if mixup_pairs_samples(cfg) and rows % 2:
        raise ConfigError(
            f"mixup pairs samples: the micro-batch per process (TRAIN.BATCH_SIZE {batch} / NUM_GPUS {procs} / "
            f"TRAIN.GRAD_ACCUM_STEPS {accum} x AUG.NUM_SAMPLE {views} = {rows} rows) must be even"
        )
    return BatchLayout(
        processes_per_machine=procs,
        machines=machines,
        global_batch=batch * machines,
        per_process=per_process,
        micro_batch=micro,
        rows=rows,
        # Evaluation batches need not divide evenly: the remainder only changes the last batch.
        test_per_process=max(1, math.ceil(test_batch / procs)),
        lr_scale=lr_scale_factor(cfg),
    )


def adopt_launcher_layout(cfg: CfgNode, world_size: int, rank: int) -> CfgNode:
    """``cfg`` with ``NUM_GPUS`` / ``NUM_SHARDS`` / ``SHARD_ID`` of the processes that actually run the job.

    Processes spawned by :func:`mvit.runtime.launch.launch` follow the config. A job started by torchrun or
    SLURM (``LOCAL_WORLD_SIZE`` in the environment) has the launcher's layout: when it differs from the
    config's, it is adopted (logged), since the batch per process and the lr depend on it.

    Raises:
        ConfigError: the process count matches neither the config nor a launcher's layout.
    """
    procs, machines = max(1, cfg.NUM_GPUS), cfg.NUM_SHARDS
    if world_size == procs * machines:
        return cfg
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 0))
    if local > 0 and world_size % local == 0 and "RANK" in os.environ:
        new = cfg.clone()
        new.defrost()
        new.NUM_GPUS, new.NUM_SHARDS, new.SHARD_ID = local, world_size // local, rank // local
        new.freeze()
        logger.info(
            "the launcher started %d machine(s) x %d process(es): NUM_GPUS %d, NUM_SHARDS %d (the config says "
            "NUM_GPUS %d, NUM_SHARDS %d)",
            new.NUM_SHARDS,
            local,
            new.NUM_GPUS,
            new.NUM_SHARDS,
            cfg.NUM_GPUS,
            cfg.NUM_SHARDS,
        )
        return new
    hint = " (NUM_GPUS 0 runs one process on one machine)" if cfg.NUM_GPUS == 0 and machines > 1 else ""
    raise ConfigError(
        f"this job has {world_size} process(es) but NUM_GPUS {cfg.NUM_GPUS} x NUM_SHARDS {machines} means "
        f"{procs * machines}{hint}: set NUM_GPUS to the processes of one machine and NUM_SHARDS to the machines"
    )
