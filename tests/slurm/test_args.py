"""The submit options without a cluster: what reaches submitit and sbatch, and one-line errors for bad input."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from mvit.runtime import submit as launcher
from mvit.runtime.submit import TrainingJob, executor_parameters, get_args_parser, get_target, load_script, submit

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "configs" / "IN1K" / "MVITv2_B.yaml")
# Importing the tool registers its run_net target and the projects' targets (detection).
load_script(str(ROOT / "tools" / "submit.py"))


def parse(*argv: str):
    return get_args_parser(default_target="run_net").parse_args(["--cfg", CFG, "--job-dir", "/tmp/job", *argv])


def _entry_argv(target: str, *args, **kwargs) -> list[str]:
    kwargs = dict(kwargs)
    return get_target(target).command_line(*args, kwargs.pop("tasks"), kwargs.pop("nodes"))


def test_multi_node_gpu_job_parameters() -> None:
    args = parse(
        "--nodes", "4", "--gpus-per-node", "8", "--partition", "P", "--time", "4320", "--mem-gb", "0",
        "--constraint", "volta32gb", "--comment", "c", "--account", "a", "--qos", "q", "DATA.PATH_TO_DATA_DIR", "/d",
    )  # fmt: skip
    params = executor_parameters(args)
    assert params == {
        "name": "MVITv2_B",
        "nodes": 4,
        "tasks_per_node": 8,  # one task per GPU
        "gpus_per_node": 8,
        "cpus_per_task": 10,
        "timeout_min": 4320,
        "mem_gb": 0,
        "slurm_signal_delay_s": 120,
        "slurm_partition": "P",
        "slurm_constraint": "volta32gb",
        "slurm_comment": "c",
        "slurm_account": "a",
        "slurm_qos": "q",
        "slurm_srun_args": ["--kill-on-bad-exit=1"],  # one failed task ends the step
        "slurm_setup": ["export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-2}"],
    }
    # submitit accepts every key and turns them into sbatch flags (its script, written without srun on PATH).
    script = launcher.sbatch_script(args)
    for flag in ("--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--partition=P", "--signal=USR2@120"):
        assert f"#SBATCH {flag}" in script


def test_cpu_job_gets_one_task_per_process() -> None:
    params = executor_parameters(parse("--gpus-per-node", "0", "--tasks-per-node", "2"))
    assert (params["tasks_per_node"], params["cpus_per_task"]) == (2, 1)
    assert "gpus_per_node" not in params


def test_entry_point_command_lines() -> None:
    run_net = _entry_argv("run_net", "c.yaml", ["A", "1"], "/out", tasks=8, nodes=4)
    assert run_net == [
        "--cfg", "c.yaml", "--stop-signals", "none", "A", "1", "NUM_GPUS", "8", "NUM_SHARDS", "4", "OUTPUT_DIR", "/out",
    ]  # fmt: skip
    detection = _entry_argv("detection", "c.py", ["train.max_iter=9"], "/out", tasks=8, nodes=4)
    assert detection[:3] == ["--config-file", "c.py", "--resume"]
    assert detection[-2:] == ["train.max_iter=9", "train.output_dir=/out"]


def test_job_dir_placeholder_is_the_job_id() -> None:
    job = TrainingJob(get_target("run_net"), "c.yaml", [], "/ckpt/%j")
    assert job.output_dir("1234") == "/ckpt/1234"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--nodes", "0"], "--nodes must be at least 1"),
        (["--gpus-per-node", "8", "--tasks-per-node", "2"], "must equal --gpus-per-node"),
        (["DATA.PATH_TO_DATA_DIR"], "KEY VALUE pairs"),
        (["A", "1", "--nodes", "2"], "options go before the config overrides: --nodes"),
        (["OUTPUT_DIR", "/x"], "OUTPUT_DIR: set by submit.py"),
        (["--target", "detection", "train.output_dir=/x"], "train.output_dir: set by submit.py"),
        (["--cluster", "local", "--nodes", "2"], "--nodes 2 needs SLURM"),
    ],
)
def test_bad_options_are_one_line_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        submit(parse(*argv))
    assert "\n" not in str(err.value)


def test_missing_config_is_named() -> None:
    args = get_args_parser(default_target="run_net").parse_args(["--cfg", "missing.yaml", "--job-dir", "/tmp/job"])
    with pytest.raises(FileNotFoundError, match="--cfg: no such config file: missing.yaml"):
        submit(args)


def _probe_command_line(cfg: str, opts, output_dir: str, tasks: int, nodes: int) -> list[str]:
    return [cfg, *opts, output_dir, str(tasks), str(nodes)]


@pytest.fixture
def in_process_job(tmp_path):
    """Submits a probe target to submitit's debug executor (it runs in this process); restores what a task sets."""
    env, signals = dict(os.environ), {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM, signal.SIGCONT)}

    def run(main, cooperative_stop: bool = True):
        launcher.register_target(
            launcher.LaunchTarget(
                "probe", main=main, command_line=_probe_command_line, cooperative_stop=cooperative_stop
            )
        )
        args = get_args_parser().parse_args(
            [
                "--target",
                "probe",
                "--cfg",
                CFG,
                "--job-dir",
                str(tmp_path),
                "--cluster",
                "debug",
                "--gpus-per-node",
                "0",
            ]
            + ["A", "1"]
        )
        return submit(args)

    yield run
    launcher._TARGETS.pop("probe", None)
    os.environ.clear()
    os.environ.update(env)
    for sig, handler in signals.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("cooperative", [True, False])
def test_only_cooperative_targets_get_the_stop_request_handlers(in_process_job, tmp_path, cooperative: bool) -> None:
    def main(argv: list[str]):
        return {"argv": argv, "usr2": signal.getsignal(signal.SIGUSR2)}

    result = in_process_job(main, cooperative_stop=cooperative).results()[0]
    assert result["argv"] == [CFG, "A", "1", str(tmp_path), "1", "1"]
    assert (getattr(result["usr2"], "__name__", None) == "on_usr2") == cooperative


def test_a_target_that_exits_with_an_error_code_fails_the_job(in_process_job) -> None:
    job = in_process_job(lambda argv: 2)
    os.environ.update(job.environ)  # what results() does; results() would also start a debugger on the failure
    error = job.exception()
    assert isinstance(error, RuntimeError) and "probe exited with code 2" in str(error)
