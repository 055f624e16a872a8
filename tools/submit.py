#!/usr/bin/env python3
"""Submit training to SLURM with submitit (or run it on this machine when sbatch is not on PATH).

Examples:
    # ImageNet, MViTv2-B on 4 nodes of 8 GPUs, 72 hours, requeued through time limits and preemptions
    python tools/submit.py --cfg configs/IN1K/MVITv2_B.yaml --nodes 4 --gpus-per-node 8 --partition P \\
        --time 4320 --job-dir /checkpoint/$USER/mvitv2_b DATA.PATH_TO_DATA_DIR /datasets/imagenet
    # COCO Cascade Mask R-CNN with an MViTv2-B backbone (detectron2 LazyConfig, key=value overrides)
    python tools/submit.py --target detection --cfg projects/detection/configs/cascade_mask_rcnn_mvitv2_b_3x.py \\
        --nodes 2 --gpus-per-node 8 --partition P --job-dir /checkpoint/$USER/cascade_mvitv2_b
    # two CPU processes (gloo), on SLURM or locally
    python tools/submit.py --cfg CFG --gpus-per-node 0 --tasks-per-node 2 --job-dir out/cpu2 --time 30
    # what would be submitted: the sbatch script and the batch arithmetic, nothing submitted
    python tools/submit.py --cfg configs/IN1K/MVITv2_B.yaml --nodes 4 --job-dir /checkpoint/$USER/b --dry-run

Targets: ``run_net`` (this tool registers it) and those of the projects in :data:`LAUNCH_MODULES`.
Options and the preemption protocol: ``mvit/runtime/submit.py``, ``tools/slurm_local/README.md``.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import submitit

from mvit.errors import UserError, run_cli
from mvit.runtime.projects import load_projects
from mvit.runtime.submit import LaunchTarget, get_args_parser, load_script, register_target, run_script, submit

# Projects whose import registers their own launch target (skipped when not installed).
LAUNCH_MODULES = ("projects.detection.launch",)
RUN_NET = Path(__file__).resolve().with_name("run_net.py")
# Set by the launcher from --job-dir, --nodes and --tasks-per-node.
_RUN_NET_TAKEN = ("OUTPUT_DIR", "NUM_GPUS", "NUM_SHARDS", "SHARD_ID")


def run_net_command_line(cfg: str, opts: Sequence[str], output_dir: str, tasks: int, nodes: int) -> list[str]:
    """run_net's command line in one task."""
    launch = ["NUM_GPUS", str(tasks), "NUM_SHARDS", str(nodes)]
    # The task's own handlers (TrainingJob) turn signals into stop requests; run_net must not replace them.
    return ["--cfg", cfg, "--stop-signals", "none", *opts, *launch, "OUTPUT_DIR", output_dir]


def check_run_net_job(cfg: str, opts: Sequence[str], tasks: int, nodes: int) -> str:
    """Load the config as each task will (NUM_GPUS = tasks per node, NUM_SHARDS = nodes) and check its batch;
    returns the batch arithmetic in one line."""
    from mvit.config import load_config
    from mvit.data.registry import check_datasets
    from mvit.engine.batch import batch_layout

    _, extensions = load_projects(load_script(str(RUN_NET)).PROJECTS)
    config = load_config(cfg, [*opts, "NUM_GPUS", str(tasks), "NUM_SHARDS", str(nodes)], extensions=extensions)
    check_datasets(config)
    return batch_layout(config).describe()


def check_run_net_overrides(opts: Sequence[str]) -> None:
    if len(opts) % 2:
        raise UserError(f"config overrides must be KEY VALUE pairs, got an odd number: {' '.join(opts)}")
    taken = sorted(set(_RUN_NET_TAKEN).intersection(opts[::2]))
    if taken:
        raise UserError(f"{', '.join(taken)}: set by submit.py from --job-dir, --nodes and --tasks-per-node")


RUN_NET_TARGET = register_target(
    LaunchTarget(
        name="run_net",
        # run_net returns PREEMPTED_EXIT_CODE after it checkpointed on a stop request, 2 for bad input.
        main=functools.partial(run_script, str(RUN_NET)),
        command_line=run_net_command_line,
        check_overrides=check_run_net_overrides,
        check_job=check_run_net_job,
        cpu_opts=("DEVICE", "cpu"),  # --gpus-per-node 0: --tasks-per-node CPU processes (gloo)
        help="tools/run_net.py, image and video classification",
    )
)
load_projects(LAUNCH_MODULES)


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[submit] %(message)s")
    args = get_args_parser(description=__doc__.splitlines()[0], default_target="run_net").parse_args(argv)
    job = submit(args)
    if job is None:  # --dry-run
        return 0
    if isinstance(job, (submitit.LocalJob, submitit.DebugJob)):
        # The job runs on this machine (in this process for "debug"): wait for it, like run_net itself.
        try:
            job.results()
        except KeyboardInterrupt:
            job.cancel()
            raise
        except Exception as err:  # noqa: BLE001 - submitit re-raises the task's failure; report and fail
            print(f"error: job {job.job_id} failed:\n{err}", file=sys.stderr)
            return 1
        logging.info("job %s finished", job.job_id)
    return 0


if __name__ == "__main__":
    run_cli(main)
