"""Submit training to SLURM (or run it on this machine) with submitit, and survive preemption and time limits.

The launcher knows no project: an entry point registers a :class:`LaunchTarget` (``tools/submit.py`` registers
run_net's, the detection project its detectron2 train_net), and ``tools/submit.py`` is a thin wrapper over
:func:`get_args_parser` and :func:`submit`. A job runs one task per GPU (or ``--tasks-per-node`` CPU processes);
each task exports the ``torch.distributed`` environment submitit derives from SLURM (``MASTER_ADDR``,
``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``) and calls the target's ``main``
in-process, which joins that process group instead of spawning processes.

Preemption and time limits (see ``tools/slurm_local/README.md``), for targets that stop cooperatively:

- ``SIGUSR2``, which SLURM sends ``--signal-delay`` seconds before the time limit (submitit's ``--signal``):
  the trainer checkpoints at the next iteration boundary and rank 0 requeues the job (``scontrol requeue``).
- ``SIGTERM``, which SLURM sends on preemption, ``scontrol requeue`` and ``scancel``: the trainer checkpoints
  the same way and the task exits; SLURM itself requeues the job (or ends it, for ``scancel``).

Either way the requeued job keeps its id and job folder, and the engine's auto-resume continues from the
checkpoint with the same epoch, iteration, optimizer, scheduler and RNG state.

A lost rank (a task killed, a node gone, NCCL aborting after ``DIST_TIMEOUT_S``): SLURM runs the tasks with
``srun --kill-on-bad-exit=1``, so one task that fails ends the step instead of leaving the others waiting in a
collective; a survivor that saw its peer vanish (exit 69) requeues the job as for a time limit, at most
``--max-rank-loss-requeues`` times, and the requeued job resumes from the last complete checkpoint.

``--dry-run`` prints the sbatch script and the batch arithmetic and submits nothing; a failing ``sbatch`` (no
controller, a bad partition) is one line, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, Callable, NoReturn, Optional, Sequence

import submitit

from ..errors import UserError, report
from ..utils.cli import ArgumentParser, import_script
from .preemption import PREEMPTED_EXIT_CODE, Preempted, request_stop

# Exit code of an entry point whose process lost a peer (mvit.runtime.launch's, not imported: it pulls in torch).
RANK_LOST_EXIT_CODE = 69
# One failing task ends the step at once (default: the others wait in their next collective until a timeout).
SRUN_ARGS = ("--kill-on-bad-exit=1",)
# Exported in the job script before srun (the user's own value wins): NCCL aborts its communicators after an error
# or DIST_TIMEOUT_S and the survivors raise, so they can requeue (see mvit.utils.distributed).
NCCL_SETUP = ("export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-2}",)

__all__ = [
    "REQUEUE_EXIT_CODE",
    "TERMINATED_EXIT_CODE",
    "LaunchTarget",
    "TrainingJob",
    "executor_parameters",
    "get_args_parser",
    "get_target",
    "list_targets",
    "load_script",
    "register_target",
    "run_script",
    "submit",
]

logger = logging.getLogger(__name__)


def _no_check(opts: Sequence[str]) -> None:
    return None


def _no_job_check(cfg: str, opts: Sequence[str], tasks_per_node: int, nodes: int) -> Optional[str]:
    return None


@dataclasses.dataclass(frozen=True)
class LaunchTarget:
    """An entry point a job can run; its callables are pickled into the job (define them at module level).

    Args:
        name: the ``--target`` value.
        main: runs the entry point in the task on a command line and returns its result. It reports a stop after
            a checkpoint by raising :class:`~mvit.runtime.preemption.Preempted` or returning
            :data:`~mvit.runtime.preemption.PREEMPTED_EXIT_CODE`; any other non-zero ``int`` is a failure.
        command_line: ``(cfg, opts, output_dir, tasks_per_node, nodes) -> argv`` of ``main`` in one task.
        check_overrides: raises :class:`~mvit.errors.UserError` for config overrides the job cannot take
            (checked at submission).
        check_job: ``(cfg, opts, tasks_per_node, nodes)``; raises :class:`~mvit.errors.UserError` for a config
            that cannot run on that many nodes and tasks (e.g. a batch that does not divide), checked at
            submission so the error comes before the job waits in the queue; returns one line on the batch
            arithmetic (or None).
        cpu_opts: config overrides that ask the entry point for the CPU, added for ``--gpus-per-node 0`` (a GPU
            config would otherwise stop in the job with "CUDA is not available").
        cooperative_stop: whether ``main`` honours :func:`mvit.runtime.preemption.request_stop` (checkpoint at the
            next iteration, then stop as above). Otherwise submitit's own handlers stay: on SIGUSR2 the job
            requeues at once and resumes from the entry point's last periodic checkpoint.
        help: one line for ``--help``.
    """

    name: str
    main: Callable[[list[str]], Any]
    command_line: Callable[[str, Sequence[str], str, int, int], list[str]]
    check_overrides: Callable[[Sequence[str]], None] = _no_check
    check_job: Callable[[str, Sequence[str], int, int], Optional[str]] = _no_job_check
    cpu_opts: tuple[str, ...] = ()
    cooperative_stop: bool = True
    help: str = ""


_TARGETS: dict[str, LaunchTarget] = {}


def register_target(target: LaunchTarget) -> LaunchTarget:
    """Make ``target`` available as ``--target NAME`` (registering the same name again replaces it)."""
    _TARGETS[target.name] = target
    return target


def get_target(name: str) -> LaunchTarget:
    """The registered target ``name``; :class:`~mvit.errors.UserError` naming the known ones otherwise."""
    if name not in _TARGETS:
        raise UserError(f"--target {name}: unknown launch target (registered: {', '.join(sorted(_TARGETS)) or 'none'})")
    return _TARGETS[name]


def list_targets() -> list[str]:
    """Names of the registered launch targets, sorted."""
    return sorted(_TARGETS)


def load_script(path: str) -> ModuleType:
    """Import an entry-point script by path (``tools/`` is not a package), afresh each time."""
    return import_script(path, "_mvit_entry_" + Path(path).stem, reuse=False)


def run_script(path: str, argv: list[str]) -> Any:
    """``main(argv)`` of the script at ``path``: a picklable :attr:`LaunchTarget.main` as ``partial(run_script, path)``."""
    return load_script(path).main(argv)


# What a task's entry point returns when it checkpointed and stopped on a signal.
_STOPPED = object()
# Exit code of a task that checkpointed and asked to be requeued; submitit's local executor restarts the
# tasks when one exits with it (SLURM requeues through ``scontrol requeue`` instead).
REQUEUE_EXIT_CODE = 144
# Exit code of a task that checkpointed because SLURM is ending the job (128 + SIGTERM, as a shell reports it).
TERMINATED_EXIT_CODE = 128 + signal.SIGTERM


def get_args_parser(
    description: Optional[str] = None, add_help: bool = True, default_target: Optional[str] = None
) -> argparse.ArgumentParser:
    """Command-line options of a submit entry point (experiment, resources, scheduler).

    Args:
        default_target: the ``--target`` when none is given (``--target`` is required without one); the
            choices are the targets registered when the parser is made.
    """
    targets = "; ".join(f"{name}: {_TARGETS[name].help}" if _TARGETS[name].help else name for name in list_targets())
    parser = ArgumentParser(description=description, add_help=add_help)
    exp = parser.add_argument_group("experiment")
    exp.add_argument("--cfg", required=True, help="config file of the entry point (yaml or LazyConfig .py)")
    exp.add_argument(
        "--target",
        choices=list_targets(),
        default=default_target,
        required=default_target is None,
        help=f"entry point ({targets})" + (" (default: %(default)s)" if default_target else ""),
    )
    exp.add_argument(
        "--job-dir",
        required=True,
        help="shared folder for logs, the merged config and checkpoints (becomes OUTPUT_DIR); %%j = job id",
    )
    exp.add_argument("--name", default=None, help="SLURM job name (default: the config's file name)")
    exp.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="config overrides passed to the entry point (KEY VALUE pairs; key=value for LazyConfigs)",
    )

    res = parser.add_argument_group("resources")
    res.add_argument("--nodes", type=int, default=1, help="number of nodes (default: %(default)s)")
    res.add_argument(
        "--gpus-per-node",
        type=int,
        default=8,
        help="GPUs per node, one task each; 0 for a CPU job (default: %(default)s)",
    )
    res.add_argument(
        "--tasks-per-node",
        type=int,
        default=None,
        help="processes per node (default: one per GPU, or 1 for a CPU job)",
    )
    res.add_argument(
        "--cpus-per-task", type=int, default=None, help="CPU cores per task (default: 10 with GPUs, 1 without)"
    )
    res.add_argument(
        "--mem-gb",
        type=float,
        default=None,
        help="memory per node in GB; 0: all of the node's (default: the cluster's DefMemPerCPU / DefMemPerGPU, "
        "often a few GB per CPU: set it for data loaders that cache or decode video)",
    )
    res.add_argument("--time", type=int, default=4320, help="time limit in minutes (default: %(default)s)")

    sched = parser.add_argument_group("scheduler")
    sched.add_argument(
        "--cluster",
        choices=("slurm", "local", "debug"),
        default=None,
        help="executor (default: slurm when sbatch is on PATH, local otherwise)",
    )
    sched.add_argument("--partition", default=None, help="SLURM partition")
    sched.add_argument("--account", default=None, help="SLURM account")
    sched.add_argument("--qos", default=None, help="SLURM quality of service")
    sched.add_argument(
        "--constraint",
        default=None,
        help="SLURM node features, e.g. a GPU type your cluster defines (the installed torch must have kernels for "
        "it: see docs/gpu.md)",
    )
    sched.add_argument("--comment", default=None, help="SLURM comment")
    sched.add_argument("--exclude", default=None, help="nodes to leave out")
    sched.add_argument(
        "--signal-delay",
        type=int,
        default=120,
        help="seconds before the time limit at which the job is told to checkpoint and requeue (SIGUSR2; default: "
        "%(default)s)",
    )
    sched.add_argument(
        "--max-num-timeout",
        type=int,
        default=20,
        help="time-limit requeues allowed by submitit's own handler, for entry points without cooperative stop "
        "(default: %(default)s)",
    )
    sched.add_argument(
        "--max-rank-loss-requeues",
        type=int,
        default=3,
        help="requeues after a lost rank (a task killed, a node or NCCL peer gone) before the job fails "
        "(default: %(default)s)",
    )
    sched.add_argument(
        "--dry-run",
        action="store_true",
        help="check the options and the config, print the sbatch script and the batch arithmetic; submit nothing",
    )
    return parser


def _tasks_per_node(args: argparse.Namespace) -> int:
    if args.tasks_per_node is not None:
        return args.tasks_per_node
    return args.gpus_per_node if args.gpus_per_node > 0 else 1


def _check_args(args: argparse.Namespace) -> Optional[str]:
    """One-line errors for options that would otherwise fail inside the job; returns the batch arithmetic line."""
    for name in ("nodes", "time"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.gpus_per_node < 0:
        raise UserError(f"--gpus-per-node must be >= 0, got {args.gpus_per_node}")
    if args.tasks_per_node is not None and args.tasks_per_node < 1:
        raise UserError(f"--tasks-per-node must be at least 1, got {args.tasks_per_node}")
    if args.gpus_per_node and _tasks_per_node(args) != args.gpus_per_node:
        raise UserError(
            f"--tasks-per-node ({args.tasks_per_node}) must equal --gpus-per-node ({args.gpus_per_node}): "
            "one task per GPU"
        )
    if not Path(args.cfg).is_file():
        raise _MissingFile(f"--cfg: no such config file: {args.cfg}")
    opts = _overrides(args)
    misplaced = [o for o in opts if o.startswith("--")]
    if misplaced:
        raise UserError(f"options go before the config overrides: {' '.join(misplaced)}")
    target = get_target(args.target)
    target.check_overrides(opts)
    return target.check_job(args.cfg, _job_overrides(args), _tasks_per_node(args), args.nodes)


class _MissingFile(UserError, FileNotFoundError):
    """A file named on the command line that does not exist (also a ``FileNotFoundError`` for callers)."""


def _overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides, without the ``--`` that may separate them from the options."""
    return list(args.opts[1:] if args.opts[:1] == ["--"] else args.opts)


def _job_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides each task gets: the user's, then the target's CPU request for a job without GPUs."""
    cpu = list(get_target(args.target).cpu_opts) if args.gpus_per_node == 0 else []
    return [*_overrides(args), *cpu]


def executor_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """submitit ``update_parameters`` keywords for the parsed options (``slurm_*`` ones are ignored locally)."""
    cpus = args.cpus_per_task if args.cpus_per_task is not None else (10 if args.gpus_per_node else 1)
    params: dict[str, Any] = {
        "name": args.name or Path(args.cfg).stem,
        "nodes": args.nodes,
        "tasks_per_node": _tasks_per_node(args),
        "cpus_per_task": cpus,
        "timeout_min": args.time,
        "slurm_signal_delay_s": args.signal_delay,
        "slurm_srun_args": list(SRUN_ARGS),
    }
    if args.gpus_per_node:
        params["gpus_per_node"] = args.gpus_per_node
        params["slurm_setup"] = list(NCCL_SETUP)
    if args.mem_gb is not None:
        params["mem_gb"] = args.mem_gb
    for opt in ("partition", "account", "qos", "constraint", "comment", "exclude"):
        if getattr(args, opt):
            params[f"slurm_{opt}"] = getattr(args, opt)
    return params


@dataclasses.dataclass
class TrainingJob:
    """The callable submitit pickles and runs once per task; checkpointable, so SLURM can requeue it.

    Args:
        target: the entry point (a registered :class:`LaunchTarget`).
        cfg: config file.
        opts: config overrides.
        job_dir: job folder (``%j`` is replaced by the job id); the entry point's OUTPUT_DIR.
        cpus_per_task: intra-op threads of each task.
        max_rank_loss_requeues: requeues after a lost rank before the job fails.
    """

    target: LaunchTarget
    cfg: str
    opts: list[str]
    job_dir: str
    cpus_per_task: int = 1
    max_rank_loss_requeues: int = 3
    _requeue_requested: bool = dataclasses.field(default=False, init=False, repr=False)

    def output_dir(self, job_id: str) -> str:
        return self.job_dir.replace("%j", job_id)

    def __call__(self) -> Optional[Any]:
        # Imported here: submitit unpickles this object before the job's own logging and threads are set up.
        import torch

        _task_logging()
        job_env = submitit.JobEnvironment()
        dist_env = submitit.helpers.TorchDistributedEnvironment()
        # Like torchrun: every task sees all of the node's GPUs and picks cuda:LOCAL_RANK.
        dist_env.export(set_cuda_visible_devices=False, overwrite=True)
        threads = int(os.environ.get("SLURM_CPUS_PER_TASK", self.cpus_per_task))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
        if self.target.cooperative_stop:
            self._install_signal_handlers()
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", 0))
        logger.info(
            "%s: rank %d/%d (local %d) on %s, master %s:%d, restart %d",
            job_env,
            dist_env.rank,
            dist_env.world_size,
            dist_env.local_rank,
            job_env.hostname,
            dist_env.master_addr,
            dist_env.master_port,
            restarts,
        )
        argv = self.target.command_line(
            self.cfg, self.opts, self.output_dir(job_env.job_id), dist_env.local_world_size, job_env.num_nodes
        )
        try:
            result = self.target.main(argv)
        except Preempted as stop:
            logger.warning("%s", stop)
            self._exit_after_checkpoint(job_env, dist_env.rank)
        if isinstance(result, int) and not isinstance(result, bool):
            if result == PREEMPTED_EXIT_CODE:  # a CLI main caught Preempted after its checkpoint and logged where
                self._exit_after_checkpoint(job_env, dist_env.rank)
            if result == RANK_LOST_EXIT_CODE:  # the entry point printed which peer was lost
                self._requeue_after_rank_loss(job_env, self.output_dir(job_env.job_id))
            if result:
                # The entry point already printed the one-line reason (exit code 2: bad config, data or checkpoint).
                raise RuntimeError(f"{self.target.name} exited with code {result}; see this task's log")
        return result

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """submitit's hook on SIGUSR2 before our handlers are installed: requeue as is; resume does the rest."""
        return submitit.helpers.DelayedSubmission(self)

    # -- inside the task --------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        """Replace submitit's handlers (which exit mid-iteration) with stop requests the trainer honours."""

        def on_usr2(signum: int, _frame: Optional[FrameType]) -> None:
            self._requeue_requested = True
            request_stop("received SIGUSR2: time limit near, checkpoint and requeue")

        def on_term(signum: int, _frame: Optional[FrameType]) -> None:
            request_stop("received SIGTERM: SLURM is ending or requeueing the job")

        signal.signal(signal.SIGUSR2, on_usr2)
        signal.signal(signal.SIGTERM, on_term)
        # SLURM sends SIGCONT with SIGTERM; the default action (continue) is what we want.
        signal.signal(signal.SIGCONT, signal.SIG_DFL)

    def _exit_after_checkpoint(self, job_env: submitit.JobEnvironment, rank: int) -> NoReturn:
        """Leave the task without a submitit result, so the job is not reported finished before it is."""
        # SLURM's SIGTERM for the requeue may land during interpreter shutdown, when Python's handlers are gone;
        # it also ends data-loader workers, whose death torch's SIGCHLD handler would raise as an error here.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if not self._requeue_requested:
            # SIGTERM: SLURM requeues a preempted job itself (or was asked to cancel it); nothing to do.
            logger.info("checkpoint written; exiting, SLURM decides whether the job comes back")
            sys.exit(TERMINATED_EXIT_CODE)
        if rank == 0 and job_env.cluster == "slurm":
            logger.info("checkpoint written; requeueing job %s", job_env.job_id)
            subprocess.run(["scontrol", "requeue", job_env.job_id], check=True, timeout=60)
        sys.exit(REQUEUE_EXIT_CODE)

    def _requeue_after_rank_loss(self, job_env: submitit.JobEnvironment, output_dir: str) -> NoReturn:
        """Requeue the job after a lost peer, as for a time limit, at most ``max_rank_loss_requeues`` times.

        Every survivor asks (no peer is left to agree with on who should); a request for a job SLURM is already
        requeueing fails harmlessly. The requeues so far are the distinct restart counts in a file of the job folder.
        """
        restart = os.environ.get("SLURM_RESTART_COUNT", "0")
        record = Path(output_dir) / ".rank_loss_requeues"
        try:
            done = set(record.read_text().split())
        except OSError:  # none yet
            done = set()
        if job_env.cluster != "slurm":
            raise RuntimeError(f"{self.target.name} lost a rank; requeueing needs SLURM (cluster {job_env.cluster})")
        if len(done - {restart}) >= self.max_rank_loss_requeues:
            raise RuntimeError(
                f"{self.target.name} lost a rank again after {len(done - {restart})} requeues "
                f"(--max-rank-loss-requeues {self.max_rank_loss_requeues}); not requeued"
            )
        with contextlib.suppress(OSError), open(record, "a") as f:
            f.write(restart + "\n")
        logger.warning("a rank was lost; requeueing job %s to resume from the last checkpoint", job_env.job_id)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # SLURM's SIGTERM for the requeue must not cut this short
        done_requeue = subprocess.run(
            ["scontrol", "requeue", job_env.job_id], capture_output=True, text=True, timeout=60
        )
        if done_requeue.returncode:
            logger.info("scontrol requeue: %s (another task asked first)", done_requeue.stderr.strip())
        sys.exit(REQUEUE_EXIT_CODE)


def _task_logging() -> None:
    """Give this module's messages a place in the task's stderr log before the entry point sets up logging."""
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname).1s %(name)s] %(message)s", "%m/%d %H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the entry point's handlers on "mvit" would print it twice


class _SlurmScript(submitit.SlurmExecutor):
    """submitit's SLURM executor on a machine without SLURM, only to write the job script (``--dry-run``)."""

    @classmethod
    def affinity(cls) -> int:
        return 1


def sbatch_script(args: argparse.Namespace) -> str:
    """The sbatch script submitit writes for these options (``%j`` and the job's pickle paths left as templates)."""
    executor = _SlurmScript(Path(args.job_dir).absolute() / "submitit", max_num_timeout=args.max_num_timeout)
    # AutoExecutor's translation: "slurm_" keys are SLURM's own, the others generic (renamed, mem_gb -> "..GB").
    params = {key.removeprefix("slurm_"): value for key, value in executor_parameters(args).items()}
    executor.update_parameters(**executor._convert_parameters(params))
    return executor._make_submission_file_text(executor._submitit_command_str, "dry-run")


def _submit_or_explain(executor: submitit.AutoExecutor, task: TrainingJob) -> submitit.Job:
    """``executor.submit(task)``; a failing sbatch (no controller, a bad partition) is one line naming its error."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):  # submitit prints sbatch's stderr before raising
            return executor.submit(task)
    except (submitit.core.utils.FailedJobError, subprocess.CalledProcessError, OSError) as err:
        said = [line.strip() for line in (str(err) or captured.getvalue()).splitlines() if line.strip()]
        reason = next((line for line in said if "error" in line.lower()), said[0] if said else report(err))
        raise UserError(f"sbatch failed: {reason}") from None


def submit(args: argparse.Namespace) -> Optional[submitit.Job]:
    """Submit the training job described by parsed :func:`get_args_parser` options.

    Returns:
        The submitted job (on the local executor it runs on this machine in the background); None for
        ``--dry-run``, which prints the sbatch script and the batch arithmetic instead.
    """
    batch = _check_args(args)
    if args.max_rank_loss_requeues < 0:
        raise UserError(f"--max-rank-loss-requeues must be >= 0, got {args.max_rank_loss_requeues}")
    if args.dry_run:
        print(sbatch_script(args))
        print(f"# batch: {batch or 'the entry point did not describe its batch'}")
        return None
    if batch:
        logger.info("%s: %s", Path(args.cfg).name, batch)
    cluster = args.cluster or ("slurm" if shutil.which("sbatch") else "local")
    if cluster != "slurm" and args.nodes > 1:
        why = "sbatch is not on PATH" if args.cluster is None else f"--cluster {cluster}"
        raise UserError(f"--nodes {args.nodes} needs SLURM ({why}: the job runs on this machine only)")
    job_dir = Path(args.job_dir).absolute()
    executor = submitit.AutoExecutor(
        folder=job_dir / "submitit", cluster=cluster, slurm_max_num_timeout=args.max_num_timeout
    )
    params = executor_parameters(args)
    executor.update_parameters(**params)
    task = TrainingJob(
        target=get_target(args.target),
        cfg=str(Path(args.cfg).absolute()),
        opts=_job_overrides(args),
        job_dir=str(job_dir),
        cpus_per_task=params["cpus_per_task"],
        max_rank_loss_requeues=args.max_rank_loss_requeues,
    )
    job = _submit_or_explain(executor, task)
    logger.info("submitted %s job %s (%s)", executor.cluster, job.job_id, task.target.name)
    logger.info("job folder: %s", task.output_dir(str(job.job_id)))
    logger.info("logs: %s", job.paths.stdout)
    return job
