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
    import datetime

    import torch
    import torch.distributed as dist
    from detectron2.utils import comm

    from mvit.utils.distributed import collective_timeout_s

    from . import train_net

    args = train_net.parse_args(argv)
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size > 1:
        has_gpu = torch.cuda.is_available()
        if has_gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(
            backend="nccl" if has_gpu else "gloo",
            init_method="env://",
            timeout=datetime.timedelta(seconds=collective_timeout_s()),
        )
        comm.create_local_process_group(int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
        comm.synchronize()
    try:
        return train_net.main(args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


TARGET = register_target(
    LaunchTarget(
        name="detection",
        main=run_task,
        command_line=command_line,
        check_overrides=check_overrides,
        # train_net's StopOnRequest hook checkpoints after the current iteration; `--resume` continues.
        cooperative_stop=True,
        help="projects/detection/train_net.py, detectron2 LazyConfig",
    )
)
