"""The ``detection`` launch target of ``tools/submit.py``: detectron2's train_net in a submitit task.

Importing this module registers the target with :mod:`mvit.runtime.submit`; detectron2 is imported only when a
task runs it. Each task runs ``train_net.main`` in-process, as ``detectron2.engine.launch`` does in each worker,
joining the process group from the environment the launcher exported (``RANK``, ``WORLD_SIZE``, ...).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from mvit.errors import UserError
from mvit.runtime.submit import LaunchTarget, register_target

__all__ = ["TARGET", "check_overrides", "command_line", "run_task"]


def command_line(cfg: str, opts: Sequence[str], output_dir: str, tasks: int, nodes: int) -> list[str]:
    """train_net's command line in one task; ``--resume`` continues from OUTPUT_DIR's last checkpoint after a requeue."""
    return [
        "--config-file",
        cfg,
        "--resume",
        "--num-gpus",
        str(tasks),
        "--num-machines",
        str(nodes),
        *opts,
        f"train.output_dir={output_dir}",
    ]


def check_overrides(opts: Sequence[str]) -> None:
    taken = [o.split("=")[0] for o in opts if o.startswith("train.output_dir=")]
    if taken:
        raise UserError(f"{', '.join(taken)}: set by submit.py from --job-dir, --nodes and --tasks-per-node")


def run_task(argv: list[str]) -> Any:
    """Run train_net's ``main`` in this task (what ``detectron2.engine.launch`` does in each worker)."""
    import sys

    import torch
    import torch.distributed as dist
    from detectron2.config import LazyConfig
    from detectron2.utils import comm

    from mvit.errors import report
    from mvit.runtime.launch import RANK_LOST_EXIT_CODE
    from mvit.utils.distributed import init_process_group, is_distributed, is_peer_loss

    from . import train_net

    args = train_net.parse_args(argv)
    world_size, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    train_net.check_device(cfg, local_world)
    try:
        if world_size > 1:
            # This task's own GPU, current before the group exists (no NCCL context on another task's GPU).
            on_gpu = str(cfg.train.device).startswith("cuda")
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if on_gpu else None
            init_process_group("nccl" if on_gpu else "gloo", "env://", world_size, rank, device=device)
            comm.create_local_process_group(local_world)
            comm.synchronize()
        return train_net.main(args)
    except Exception as err:
        if not (is_distributed() and is_peer_loss(err)):
            raise
        print(f"error: rank {rank} lost contact with a peer: {report(err)}", file=sys.stderr, flush=True)
        return RANK_LOST_EXIT_CODE
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


TARGET = register_target(
    LaunchTarget(
        name="detection",
        main=run_task,
        command_line=command_line,
        check_overrides=check_overrides,
        cpu_opts=("train.device=cpu",),  # --gpus-per-node 0: --tasks-per-node CPU processes (gloo)
        # train_net's StopOnRequest hook checkpoints after the current iteration; `--resume` continues.
        cooperative_stop=True,
        help="projects/detection/train_net.py, detectron2 LazyConfig",
    )
)
