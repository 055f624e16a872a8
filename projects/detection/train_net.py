#!/usr/bin/env python
"""Train and evaluate detectors with an MViTv2 backbone from a detectron2 LazyConfig.

Examples (from the repository root)::

    # COCO, MViTv2-T Mask R-CNN, 8 GPUs on one machine (ImageNet init from train.init_checkpoint)
    python projects/detection/train_net.py --config-file projects/detection/configs/mask_rcnn_mvitv2_t_3x.py \\
        --num-gpus 8 train.init_checkpoint=/path/to/MViTv2_T_in1k.pyth
    # evaluate a released detectron2 checkpoint
    python projects/detection/train_net.py --config-file projects/detection/configs/cascade_mask_rcnn_mvitv2_b_3x.py \\
        --eval-only train.init_checkpoint=/path/to/model_final_421a91.pkl
    # continue an interrupted run from the last checkpoint in train.output_dir
    python projects/detection/train_net.py --config-file ... --resume

``train.init_checkpoint`` is either a whole detector of detectron2 (its model zoo ``.pkl`` or a ``.pth``
written by this script: loaded by ``SafeDetectionCheckpointer``) or an ImageNet checkpoint of the core (official
``.pyth``, mmpretrain, this project's format ...: loaded into the MViT backbone by ``mvit.checkpoint`` with
a report of the keys used, left new and not used, also written to ``{output_dir}/init_report.json``). A path,
a URL or ``zoo:<tag>`` (``tools/model_info.py --weights``: e.g. ``zoo:mvitv2_t.fb_in1k`` for the backbone,
``zoo:mvitv2_t.fb_coco_mask_rcnn`` for detectron2's released detector). Nothing in a checkpoint is executed on
load: pickles are read with an allow-list (``projects/detection/checkpoint.py``).

Devices: ``train.device=cuda`` (the configs' default) needs ``--num-gpus`` GPUs on each machine; CUDA unavailable,
fewer GPUs visible or a GPU the installed torch has no kernels for stops with one line, exit 2 (never a silent
switch to the CPU). ``train.device=cpu`` trains on the CPU (``--num-gpus N``: N gloo processes) with AMP off.

Preemption: a stop request (:func:`mvit.runtime.preemption.request_stop`, which the SLURM launcher calls on
``SIGUSR2`` before a time limit and on ``SIGTERM``) makes the trainer write ``model_{iter}.pth`` after the current
iteration on every rank's agreement, then raise :class:`~mvit.runtime.preemption.Preempted`; ``--resume`` continues
at the next iteration with the optimizer, scheduler and scaler state of the checkpoint. Run directly, the script
then exits with code 75 (``PREEMPTED_EXIT_CODE``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional

import torch
import torch.multiprocessing as mp
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
    launch,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from torch import nn

from mvit.checkpoint import detect_format, load_checkpoint, read_checkpoint
from mvit.checkpoint.hub import resolve_checkpoint
from mvit.data.loader import LoaderWorkerError, describe_worker_failure
from mvit.errors import ConfigError, UserError, report, run_cli
from mvit.runtime import preemption
from mvit.runtime.launch import RANK_LOST_EXIT_CODE
from mvit.runtime.lock import hold_until_exit, release_held
from mvit.utils.cli import ArgumentParser
from mvit.utils.devices import check_cuda
from mvit.utils.distributed import collective_timeout_s
from projects.detection.backbone import MViTBackbone
from projects.detection.checkpoint import SafeDetectionCheckpointer
from projects.detection.data.user_coco import add_user_coco_arguments, apply_user_coco

logger = logging.getLogger("detectron2")

__all__ = [
    "StopOnRequest",
    "do_test",
    "do_train",
    "find_mvit_backbone",
    "initialize_from_checkpoint",
    "main",
    "setup",
]


class StopOnRequest(hooks.HookBase):
    """Checkpoint and stop when :mod:`mvit.runtime.preemption` was asked to (a signal, the SLURM launcher).

    After every iteration all ranks agree on the flag (one all-reduce of a scalar); on a stop, rank 0 writes
    ``model_{iter:07d}.pth`` (with the trainer's optimizer / scheduler / scaler state, and ``last_checkpoint``
    pointing at it only once it is complete) and every rank waits for it. detectron2's loop has no cooperative
    exit, so an exception ends training: :class:`_StopTraining`, which :func:`do_train` turns into ``Preempted``.
    The ``after_train`` hooks see an unfinished run and neither evaluate nor write ``model_final``.
    """

    def __init__(self, checkpointer: SafeDetectionCheckpointer, device: str) -> None:
        self.checkpointer, self.device = checkpointer, torch.device(device)

    def after_step(self) -> None:
        if not preemption.sync_stop_requested(self.device):
            return
        iteration = self.trainer.iter
        name = f"model_{iteration:07d}"
        if comm.is_main_process():
            self.checkpointer.save(name, iteration=iteration)
        comm.synchronize()
        path = os.path.join(self.checkpointer.save_dir, f"{name}.pth")
        raise _StopTraining(preemption.Preempted(path, 0, iteration + 1, preemption.stop_reason()))


class _StopTraining(BaseException):
    """Carries ``Preempted`` out of detectron2's loop, which logs every ``Exception`` as a training failure."""

    def __init__(self, preempted: preemption.Preempted) -> None:
        super().__init__(str(preempted))
        self.preempted = preempted


def find_mvit_backbone(model: nn.Module) -> tuple[str, MViTBackbone]:
    """``(prefix, module)`` of the MViT backbone inside a detector, e.g. ``("backbone.bottom_up.", ...)``."""
    for name, module in model.named_modules():
        if isinstance(module, MViTBackbone):
            return (name + "." if name else ""), module
    raise ValueError(f"{type(model).__name__} has no MViTBackbone (is model.backbone.bottom_up an MViTBackbone?)")


def _is_detector_checkpoint(path: str) -> bool:
    """Whether ``path`` holds a whole detectron2 detector (as opposed to ImageNet weights of the core)."""
    if path.endswith(".pkl"):  # detectron2 model zoo pickles
        return True
    obj = read_checkpoint(path)
    state = obj.get("model", obj.get("model_state", obj.get("state_dict", obj)))
    if not isinstance(state, dict):
        return False
    keys = list(state)
    heads = ("proposal_generator.", "roi_heads.", "backbone.fpn_", "sem_seg_head.")
    return any(k.startswith(heads) for k in keys) or detect_format(state) == "detectron2"


def initialize_from_checkpoint(model: nn.Module, path: str, output_dir: Optional[str] = None) -> Dict[str, Any]:
    """Initialise ``model`` (not wrapped in DDP) from ``train.init_checkpoint`` and report what was used.

    A detectron2 detector checkpoint loads into the whole model. An ImageNet checkpoint of the core loads into
    the MViT backbone only (rel-pos tables of another size are resized); everything else stays new.

    Returns:
        ``{"path", "kind", "used", "resized", "new", "unused"}``, also written to ``{output_dir}/init_report.json``:
        key lists named as in ``model.state_dict()`` (``unused``: checkpoint keys that fit nowhere, named as in
        the checkpoint after format conversion). For a detector checkpoint only ``kind`` is filled in: the
        incompatible keys are logged by the checkpointer.
    """
    result: Dict[str, Any] = {"path": path, "kind": "none", "used": [], "resized": [], "new": [], "unused": []}
    if not path:
        logger.info("train.init_checkpoint is empty: every parameter starts from its initialisation")
        result["new"] = sorted(model.state_dict())
    else:
        local = resolve_checkpoint(path)  # zoo:<tag> and http(s) URLs: torch.hub's cache, verified
        local = local if os.path.isfile(local) else PathManager.get_local_path(local)
        if _is_detector_checkpoint(local):
            SafeDetectionCheckpointer(model).load(local)  # logs its own incompatible-key report
            result["kind"] = "detectron2"
        else:
            result.update(_initialize_backbone(model, path, local))
    if output_dir and comm.is_main_process():
        PathManager.mkdirs(output_dir)
        with PathManager.open(os.path.join(output_dir, "init_report.json"), "w") as f:
            json.dump(result, f, indent=1)
    return result


def _initialize_backbone(model: nn.Module, path: str, local: str) -> Dict[str, Any]:
    """Load an ImageNet checkpoint of the core into the MViT backbone of ``model``; log and return the report."""
    prefix, backbone = find_mvit_backbone(model)
    report = load_checkpoint(backbone, local, strict=False, log=False)
    used = {prefix + k for k in report.loaded}
    result = {
        "kind": f"backbone ({report.format} format)",
        "used": sorted(used),
        "resized": sorted(prefix + k for k in report.resized),
        "new": sorted(k for k in model.state_dict() if k not in used),
        "unused": sorted(report.unexpected + [k for k, _, _ in report.mismatched]),
    }
    new_in_backbone = [k for k in result["new"] if k.startswith(prefix)]
    new_modules: Dict[str, int] = {}
    for k in result["new"]:
        if not k.startswith(prefix):
            top = ".".join(k.split(".")[:2]) if k.startswith("backbone.") else k.split(".")[0]
            new_modules[top] = new_modules.get(top, 0) + 1
    logger.info(
        "Initialised from %s (%s): %d tensors used%s; new in the backbone (%d): %s; new elsewhere: %s; "
        "not used from the checkpoint (%d): %s",
        path,
        result["kind"],
        len(result["used"]),
        f" ({len(result['resized'])} resized)" if result["resized"] else "",
        len(new_in_backbone),
        ", ".join(new_in_backbone) or "none",
        ", ".join(f"{m} ({n})" for m, n in sorted(new_modules.items())) or "none",
        len(result["unused"]),
        ", ".join(result["unused"]) or "none",
    )
    return result


def _ddp(model: nn.Module, device: str, **kwargs: Any) -> nn.Module:
    """detectron2's ``create_ddp_model``, also for CPU processes (gloo): DDP takes no device ids there."""
    if not str(device).startswith("cuda"):
        kwargs.setdefault("device_ids", None)
    return create_ddp_model(model, **kwargs)


def do_test(cfg, model: nn.Module) -> Dict[str, Any]:
    """COCO-style evaluation of ``model`` on ``cfg.dataloader.test`` with ``cfg.dataloader.evaluator``."""
    if "evaluator" not in cfg.dataloader:
        return {}
    loader = instantiate(cfg.dataloader.test)  # first: a lazily registered dataset gets registered here
    results = inference_on_dataset(model, loader, instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(results)
    return results


def check_num_classes(cfg) -> None:
    """The heads' class count against the training set's categories (detectron2 checks neither): a label past the
    last class would index outside the classifier, a surplus only leaves classes unused (logged)."""
    from detectron2.data import MetadataCatalog

    heads = cfg.model.get("roi_heads")
    names = cfg.dataloader.train.dataset.get("names")
    if heads is None or heads.get("num_classes") is None or names is None:
        return
    for name in [names] if isinstance(names, str) else names:
        meta = MetadataCatalog.get(name)
        classes = meta.get("thing_classes")
        if classes is None:
            continue
        where = f"{name} ({meta.json_file})" if meta.get("json_file") else name
        if len(classes) > heads.num_classes:
            raise ConfigError(
                f"model.roi_heads.num_classes is {heads.num_classes} but {where} has {len(classes)} categories: "
                f"set model.roi_heads.num_classes={len(classes)}"
            )
        if len(classes) < heads.num_classes:
            logger.warning(
                "model.roi_heads.num_classes is %d but %s has %d categories: %d classes are never trained",
                heads.num_classes,
                where,
                len(classes),
                heads.num_classes - len(classes),
            )


class NonFiniteLossError(UserError, FloatingPointError):
    """detectron2 met a NaN or inf loss; one line naming the iteration and the last good checkpoint, exit 2."""


def _last_checkpoint(checkpointer: SafeDetectionCheckpointer) -> str:
    """The checkpoint ``--resume`` would continue from, for a message."""
    return checkpointer.get_checkpoint_file() if checkpointer.has_checkpoint() else "none yet"


def do_train(args, cfg) -> Dict[str, Any]:
    """Train ``cfg.model`` with hooks (lr schedule, checkpoints, evaluation, metric writers); resume if asked.

    Returns the results of the last evaluation (``{}`` if none ran).
    """
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    num_params = sum(p.numel() for p in model.parameters())
    logger.info("Model: %s, %.2fM parameters", type(model).__name__, num_params / 1e6)

    checkpointer_probe = SafeDetectionCheckpointer(model, cfg.train.output_dir)
    resuming = args.resume and checkpointer_probe.has_checkpoint()
    if not resuming:
        initialize_from_checkpoint(model, cfg.train.init_checkpoint, cfg.train.output_dir)

    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)  # loads the training set: its categories are known now
    check_num_classes(cfg)

    model = _ddp(model, cfg.train.device, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optimizer)
    checkpointer = SafeDetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    last_results: Dict[str, Any] = {}

    def evaluate() -> Dict[str, Any]:
        nonlocal last_results
        last_results = do_test(cfg, model)
        return last_results

    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
            hooks.EvalHook(cfg.train.eval_period, evaluate),
            # After the lr scheduler and periodic checkpointer (the state saved is a finished iteration's) and
            # after the evaluation due at this iteration (a resumed run would skip it).
            StopOnRequest(checkpointer, cfg.train.device),
            hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
            if comm.is_main_process()
            else None,
        ]
    )

    start_iter = 0
    if resuming:
        checkpointer.resume_or_load("", resume=True)
        start_iter = trainer.iter + 1  # the checkpoint holds the iteration that just finished
        logger.info("Resuming from %s at iteration %d", checkpointer.get_checkpoint_file(), start_iter)
    try:
        trainer.train(start_iter, cfg.train.max_iter)
    except _StopTraining as stop:
        logger.info("%s", stop.preempted)
        raise stop.preempted from None
    except RuntimeError as err:
        failure = describe_worker_failure(err)
        if failure is None:
            raise
        saved = _last_checkpoint(checkpointer)
        raise LoaderWorkerError(
            f"{failure} at iteration {trainer.iter}: lower dataloader.train.num_workers or total_batch_size, then "
            f"run the same command with --resume (last checkpoint: {saved})"
        ) from err
    except FloatingPointError as err:
        # detectron2's trainer stops on a NaN / inf loss before the optimizer step; one line, as run_net does.
        saved = _last_checkpoint(checkpointer)
        raise NonFiniteLossError(
            f"{str(err).splitlines()[0]} Last good checkpoint: {saved}; lower optimizer.lr or check the data, "
            "then run the same command with --resume"
        ) from None
    return last_results


def _default_setup(cfg, args) -> None:
    """detectron2's ``default_setup`` without its colour dump of the whole config file (``--verbose`` or
    ``MVIT_VERBOSE_CONFIG=1`` keep it): the log names the file, and the full config is saved to config.yaml."""
    if args.verbose or os.environ.get("MVIT_VERBOSE_CONFIG") == "1":
        return default_setup(cfg, args)
    quiet = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "config_file"})
    default_setup(cfg, quiet)  # it prints the file's contents only when args has a config_file
    logger.info("Config file: %s (its contents in the log: --verbose)", args.config_file)


def setup(args):
    """Load the LazyConfig, apply ``key=value`` overrides, fit it to this machine, set up logging."""
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    cfg = apply_user_coco(cfg, args, args.opts)  # --train-json ...: registered in every process
    check_device(cfg, int(os.environ.get("LOCAL_WORLD_SIZE", args.num_gpus)))
    if cfg.train.device == "cpu":
        # AMP (GradScaler + float16 autocast) and fp16 gradient compression need CUDA.
        cfg.train.amp.enabled = False
        cfg.train.ddp.fp16_compression = False
    if not args.eval_only and comm.is_main_process():
        # One training run per output_dir (mvit.runtime.lock), taken before anything is written there.
        hold_until_exit(cfg.train.output_dir)
    _default_setup(cfg, args)
    if cfg.train.device == "cpu":
        logger.info("train.device=cpu: training on the CPU with AMP off")
    if getattr(args, "user_coco_summary", None):
        logger.info("%s", args.user_coco_summary)
    return cfg


def main(args) -> Dict[str, Any]:
    cfg = setup(args)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        initialize_from_checkpoint(model, cfg.train.init_checkpoint)
        model = _ddp(model, cfg.train.device)
        return do_test(cfg, model)
    try:
        return do_train(args, cfg)
    finally:
        release_held(cfg.train.output_dir)  # taken by setup (main process only; a no-op elsewhere)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """detectron2's command line; a usage error is a one-line :class:`~mvit.errors.UserError`."""
    parser = ArgumentParser(
        parents=[default_argument_parser()],
        add_help=False,
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--verbose", action="store_true", help="log the config file's contents, in colour (as detectron2 does)"
    )
    add_user_coco_arguments(parser)
    return parser.parse_args(argv)


def check_config(args: argparse.Namespace):
    """Load the config file and apply the overrides once before any process starts: a mistake is one line."""
    if not args.config_file:
        raise ConfigError("--config-file is required")
    if not os.path.isfile(args.config_file):
        raise ConfigError(f"--config-file: no such config file: {args.config_file}")
    try:
        cfg = LazyConfig.load(args.config_file)
    except Exception as err:  # noqa: BLE001 - the user's config file runs here; any failure is in that file
        raise ConfigError(f"{args.config_file}: cannot load the config: {report(err)}") from None
    try:
        LazyConfig.apply_overrides(cfg, args.opts)
    except Exception as err:  # noqa: BLE001 - hydra's override parser raises its own exception types
        raise ConfigError(f"{args.config_file}: {report(err)} (overrides: {' '.join(args.opts)})") from None
    return apply_user_coco(cfg, args, args.opts)


_CPU_HINT = "train.device=cpu trains on the CPU (--num-gpus N: N CPU processes)"


def check_device(cfg, processes: int) -> None:
    """One line (:class:`~mvit.errors.ConfigError`) when ``train.device`` cannot be had on this machine.

    Args:
        processes: processes on this machine (``--num-gpus``), one GPU each when the device is cuda.
    """
    device = str(cfg.train.device)
    if device == "cpu":
        return
    if not device.startswith("cuda"):
        raise ConfigError(f"train.device={device}: expected cuda or cpu")
    check_cuda(max(1, processes), f"train.device={device} with --num-gpus {processes}", _CPU_HINT)


def invoke_main(argv: Optional[List[str]] = None) -> int:
    """Run the command line ``argv``; returns 0, or :data:`~mvit.runtime.preemption.PREEMPTED_EXIT_CODE` after a stop.

    Raises:
        UserError: a bad flag, config file, override or checkpoint (``run_cli`` prints it as one line, exit 2).
    """
    args = parse_args(argv)
    cfg = check_config(args)
    check_device(cfg, args.num_gpus)  # in this process, before any other starts
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            # How long a collective waits for a vanished peer: $MVIT_DIST_TIMEOUT seconds (default 30 min).
            timeout=datetime.timedelta(seconds=collective_timeout_s()),
        )
    except preemption.Preempted as err:
        print(f"stopped: {err}; run the same command with --resume to continue", file=sys.stderr)
        return preemption.PREEMPTED_EXIT_CODE
    except mp.ProcessExitedException as err:
        if err.signal_name is None:
            raise
        # torch's join has stopped the other processes; one line naming the lost rank, as run_net prints.
        rank = args.machine_rank * args.num_gpus + err.error_index
        last = os.path.join(cfg.train.output_dir, "last_checkpoint")
        resume = "no checkpoint yet: the same command starts again"
        if os.path.isfile(last):
            with open(last) as f:
                resume = f"run the same command with --resume to continue from {f.read().strip()}"
        print(
            f"error: rank {rank} (pid {err.error_pid}) was killed by signal {err.signal_name}; the job stopped; "
            f"{resume}",
            file=sys.stderr,
        )
        return RANK_LOST_EXIT_CODE
    return 0


if __name__ == "__main__":
    run_cli(invoke_main)
