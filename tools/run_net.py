#!/usr/bin/env python
"""Train and/or test an MViTv2 model (images or video), as PySlowFast's ``run_net``.

    python tools/run_net.py --cfg configs/IN1K/MVITv2_T.yaml DATA.PATH_TO_DATA_DIR /data/imagenet [KEY VALUE ...]
    # PySlowFast's flags mean what they mean there: several --cfg files run in turn, --opts KEY VALUE ...,
    # --init_method / --num_shards / --shard_id set INIT_METHOD / NUM_SHARDS / SHARD_ID
    python tools/run_net.py --cfg a.yaml --cfg b.yaml --num_shards 2 --shard_id 0 --init_method tcp://node0:9999 \
        --opts DATA.PATH_TO_DATA_DIR /data/imagenet

Config: core defaults + every project's ``add_*_config`` + the yaml (its ``_BASE_`` chain) + the overrides.
``TRAIN.ENABLE`` / ``TEST.ENABLE`` choose the jobs. Processes: torchrun / submitit environments (``RANK``,
``WORLD_SIZE``) are joined; otherwise ``NUM_GPUS`` processes are spawned when ``NUM_GPUS * NUM_SHARDS > 1``
(see :mod:`mvit.runtime.launch`). A run restarted with the same command resumes from the newest valid checkpoint
in ``OUTPUT_DIR``.

Exit codes: 0 done; 2 bad input (config, data, checkpoint; one line on stderr); 75 stopped by a signal after
saving a checkpoint (run the same command again to resume).

``main(argv)`` is importable by path (the SLURM launcher calls it in each task).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from typing import Iterator, Optional, Sequence

from mvit.config import CfgNode, load_config
from mvit.data.registry import check_datasets
from mvit.engine import run
from mvit.errors import USER_ERROR_EXIT_CODE, UserError, report, run_cli
from mvit.runtime import launch
from mvit.runtime.lock import OutputDirLock
from mvit.runtime.preemption import PREEMPTED_EXIT_CODE, Preempted
from mvit.runtime.projects import load_projects
from mvit.utils.cli import ArgumentParser
from mvit.utils.logging import setup_logging

# The projects this tool trains and tests: each registers its datasets and config keys on import.
PROJECTS = ("projects.classification", "projects.video")
_SIGNALS = {"TERM": signal.SIGTERM, "USR1": signal.SIGUSR1, "USR2": signal.SIGUSR2, "INT": signal.SIGINT}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cfg",
        dest="cfg_files",
        action="append",
        required=True,
        help="config yaml (may use _BASE_); repeat to run several in turn",
    )
    # PySlowFast's launch flags; given, they override the config's keys of the same meaning.
    parser.add_argument("--init_method", help="INIT_METHOD, e.g. tcp://node0:9999")
    parser.add_argument("--num_shards", type=int, help="NUM_SHARDS: machines in the job")
    parser.add_argument("--shard_id", type=int, help="SHARD_ID: this machine's index")
    parser.add_argument(
        "--stop-signals",
        default="TERM,USR1",
        help="comma-separated signals that make training checkpoint and stop at the next iteration "
        f"(exit code {PREEMPTED_EXIT_CODE}); 'none' to keep Python's defaults (default: %(default)s)",
    )
    parser.add_argument(
        "--opts", dest="flag_opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE ... (PySlowFast)"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    args = parser.parse_args(argv)
    launch_keys = (("INIT_METHOD", args.init_method), ("NUM_SHARDS", args.num_shards), ("SHARD_ID", args.shard_id))
    args.opts = [
        *args.opts,
        *args.flag_opts,
        *(str(v) for key, value in launch_keys if value is not None for v in (key, value)),
    ]
    return args


def _signals(spec: str) -> list[int]:
    if spec.strip().lower() in ("", "none"):
        return []
    try:
        return [_SIGNALS[s.strip().upper().removeprefix("SIG")] for s in spec.split(",")]
    except KeyError as err:
        raise UserError(f"--stop-signals: unknown signal {err.args[0]!r} (known: {sorted(_SIGNALS)})") from None


class _Held(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _hold_config_log() -> Iterator[list[logging.LogRecord]]:
    """Hold what the config loader logs (official keys ignored or translated) until OUTPUT_DIR is known."""
    log = logging.getLogger("mvit.config")
    held, saved = _Held(), (log.level, log.propagate)
    log.addHandler(held)
    # Not propagated: a previous run in this process may have left handlers on its own log file.
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield held.records
    finally:
        log.removeHandler(held)
        log.setLevel(saved[0])
        log.propagate = saved[1]


def _log_before_launch(cfg: CfgNode, records: list[logging.LogRecord]) -> None:
    """Write the held config messages to this machine's log in OUTPUT_DIR (log.txt on the first machine)."""
    several = cfg.NUM_SHARDS > 1 and "RANK" not in os.environ
    if not records and not several:
        return
    rank = int(os.environ["RANK"]) if "RANK" in os.environ else cfg.SHARD_ID * max(1, cfg.NUM_GPUS)
    if rank == 0 and cfg.TRAIN.ENABLE and os.path.isdir(cfg.OUTPUT_DIR):
        with OutputDirLock(cfg.OUTPUT_DIR):  # a run already there: refused before a line reaches its log.txt
            pass
    setup_logging(cfg.OUTPUT_DIR, rank)
    for record in records:
        logging.getLogger(record.name).handle(record)
    if several:
        logging.getLogger("tools.run_net").info(
            "machine %d of NUM_SHARDS %d: waiting at INIT_METHOD %s for the other machines (run the same command "
            "there with SHARD_ID 0..%d; NUM_SHARDS 1 trains on this machine alone)",
            cfg.SHARD_ID,
            cfg.NUM_SHARDS,
            cfg.INIT_METHOD,
            cfg.NUM_SHARDS - 1,
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    try:
        args = parse_args(argv)
        stop_signals = _signals(args.stop_signals)
        modules, extensions = load_projects(PROJECTS)
        for cfg_file in args.cfg_files:  # in turn, as PySlowFast runs several --cfg files
            with _hold_config_log() as records:
                cfg = load_config(cfg_file, args.opts, extensions=extensions)
            check_datasets(cfg)  # the projects are loaded: an unknown TRAIN.DATASET is one line, before any process
            _log_before_launch(cfg, records)
            launch(cfg, run, modules=modules, stop_signals=stop_signals)
    except UserError as err:
        print(f"error: {report(err)}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    except Preempted as err:
        print(f"stopped: {err}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except SystemExit as err:  # spawned processes report user errors / preemption by exit code
        return int(err.code) if isinstance(err.code, int) else 1
    return 0


if __name__ == "__main__":
    run_cli(main)
