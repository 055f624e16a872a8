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

Options and the preemption protocol: ``mvit/utils/slurm.py``, ``tools/slurm_local/README.md``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import submitit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvit.utils.slurm import get_args_parser, submit  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[submit] %(message)s")
    args = get_args_parser(description=__doc__.splitlines()[0]).parse_args(argv)
    try:
        job = submit(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
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
    sys.exit(main())
