"""The SLURM job for GPUs without a cluster: srun ends the step on a failed task, NCCL settings, the requeue after a
lost rank, a failing sbatch as one line, and ``--dry-run`` (issue 19 items 3 and 11, issue 20 point 4.5)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from mvit.runtime import submit as launcher
from mvit.runtime.submit import REQUEUE_EXIT_CODE, TrainingJob, executor_parameters, get_args_parser, load_script

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "configs" / "DEMO" / "MVITv2_digits.yaml")
TOOL = load_script(str(ROOT / "tools" / "submit.py"))  # registers run_net's target


def _fake_commands(folder: Path, **scripts: str) -> Path:
    """Executables ``name`` in ``folder`` running the given shell body; their calls are appended to calls.log."""
    folder.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = folder / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> {folder}/calls.log\n{body}\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return folder


def test_gpu_job_ends_the_step_on_a_failed_task_and_sets_nccl_error_handling(tmp_path) -> None:
    args = get_args_parser(default_target="run_net").parse_args(
        ["--cfg", CFG, "--job-dir", str(tmp_path), "--nodes", "2", "--gpus-per-node", "8"]
    )
    params = executor_parameters(args)
    assert params["slurm_srun_args"] == ["--kill-on-bad-exit=1"]
    script = launcher.sbatch_script(args)
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert "--kill-on-bad-exit=1" in srun
    assert "export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-2}" in script
    assert "#SBATCH --gpus-per-node=8" in script and "#SBATCH --nodes=2" in script


def test_cpu_job_asks_the_entry_point_for_the_cpu(tmp_path) -> None:
    args = get_args_parser(default_target="run_net").parse_args(
        ["--cfg", CFG, "--job-dir", str(tmp_path), "--gpus-per-node", "0", "--tasks-per-node", "2", "A", "1"]
    )
    assert launcher._job_overrides(args) == ["A", "1", "DEVICE", "cpu"]


def test_failing_sbatch_is_one_line_exit_2(tmp_path, monkeypatch, capsys) -> None:
    bin_dir = _fake_commands(
        tmp_path / "bin", sbatch='echo "sbatch: error: invalid partition specified: x" >&2; exit 1', srun="exit 0"
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    argv = ["--cfg", CFG, "--job-dir", str(tmp_path / "job"), "--gpus-per-node", "0", "--partition", "x"]
    with pytest.raises(SystemExit) as exit_:
        launcher_cli(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert [line for line in err.splitlines() if not line.startswith("[submit]")] == [
        "error: sbatch failed: sbatch: error: invalid partition specified: x"
    ], err
    assert "Traceback" not in err


def test_dry_run_prints_script_and_batch_and_submits_nothing(tmp_path, monkeypatch, capsys) -> None:
    bin_dir = _fake_commands(tmp_path / "bin", sbatch="exit 1", srun="exit 0")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    job_dir = tmp_path / "job"
    argv = ["--cfg", CFG, "--job-dir", str(job_dir), "--nodes", "2", "--gpus-per-node", "4", "--dry-run"]
    with pytest.raises(SystemExit) as exit_:
        launcher_cli(argv)
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert out.startswith("#!/bin/bash") and "#SBATCH --ntasks-per-node=4" in out
    # The digits demo's TRAIN.BATCH_SIZE 64 is one machine's: 2 machines x 4 processes of 16.
    batch = out.strip().splitlines()[-1]
    assert batch.startswith("# batch: ") and "128" in batch and "16" in batch, batch
    assert not (bin_dir / "calls.log").exists() and not job_dir.exists()


def launcher_cli(argv: list[str]) -> None:
    from mvit.errors import run_cli

    run_cli(lambda: TOOL.main(argv))


def test_lost_rank_requeues_like_a_time_limit_at_most_n_times(tmp_path, monkeypatch) -> None:
    bin_dir = _fake_commands(tmp_path / "bin", scontrol="exit 0")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    job = TrainingJob(
        target=launcher.get_target("run_net"), cfg=CFG, opts=[], job_dir=str(tmp_path), max_rank_loss_requeues=1
    )
    job_env = SimpleNamespace(cluster="slurm", job_id="7")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    with pytest.raises(SystemExit) as exit_:
        job._requeue_after_rank_loss(job_env, str(tmp_path))
    assert exit_.value.code == REQUEUE_EXIT_CODE
    assert (bin_dir / "calls.log").read_text() == "scontrol requeue 7\n"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # lost a rank again after the requeue: the bound is reached
    with pytest.raises(RuntimeError, match=r"lost a rank again after 1 requeues \(--max-rank-loss-requeues 1\)"):
        job._requeue_after_rank_loss(job_env, str(tmp_path))


def test_task_result_69_takes_the_requeue_path(monkeypatch, tmp_path) -> None:
    seen = []

    def requeue(self, job_env, output_dir):
        seen.append(output_dir)
        raise RuntimeError("requeued")

    monkeypatch.setattr(TrainingJob, "_requeue_after_rank_loss", requeue)
    launcher.register_target(launcher.LaunchTarget("probe69", main=lambda argv: 69, command_line=lambda *a: []))
    try:
        args = get_args_parser().parse_args(
            [
                "--target",
                "probe69",
                "--cfg",
                CFG,
                "--job-dir",
                str(tmp_path),
                "--cluster",
                "debug",
                "--gpus-per-node",
                "0",
            ]
        )
        env = dict(os.environ)
        job = launcher.submit(args)
        os.environ.update(job.environ)
        assert "requeued" in str(job.exception())
    finally:
        launcher._TARGETS.pop("probe69", None)
        os.environ.clear()
        os.environ.update(env)
    assert seen == [str(tmp_path)]
