"""tools/submit.py against a real SLURM cluster (tools/slurm_local/start.sh) and, without sbatch, locally.

Four tiny training jobs (about two minutes on two CPU cores): a 1-task SLURM job; the same job requeued with
``scontrol requeue`` in the middle of an epoch, which must end with the uninterrupted job's exact weights; a
2-task (gloo) job run locally with no sbatch on PATH; and the same 2-task job on SLURM, told that its time
limit is near (SIGUSR2) in the middle of an epoch: it must requeue itself and end with the local run's weights.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SUBMIT = ROOT / "tools" / "submit.py"
# Generous: only reached when something is broken (the failure then shows the job's logs).
JOB_TIMEOUT_S = 300
# Interrupt once this many training steps are done (of 2 epochs of 16): in the middle of the first epoch.
INTERRUPT_AT_STEP = 4


# Two classes told apart by colour; 32 training images of 32x32 per class, 4 for validation.
_CLASSES = {"red": (200, 40, 40), "blue": (40, 40, 200)}
TRAIN_IMAGES_PER_CLASS = 32
BATCH_SIZE = 4
EPOCHS = 2

# A 2-block MViTv2 on 32x32 inputs; 2 epochs of 16 steps, so that a job can be interrupted
# in the middle of an epoch. One data-loader worker: SLURM's SIGTERM reaches every process of a job, and the
# worker must survive it until the main process has checkpointed.
TINY_CONFIG = """\
MVIT:
  PATCH_KERNEL: [7, 7]
  PATCH_STRIDE: [4, 4]
  PATCH_PADDING: [3, 3]
  EMBED_DIM: 16
  NUM_HEADS: 1
  DEPTH: 2
  DIM_MUL: [[1, 2.0]]
  HEAD_MUL: [[1, 2.0]]
  POOL_KVQ_KERNEL: [3, 3]
  POOL_KV_STRIDE_ADAPTIVE: [2, 2]
  POOL_Q_STRIDE: [[1, 2, 2]]
  DROPPATH_RATE: 0.1
MODEL:
  NUM_CLASSES: 2
DATA:
  PATH_TO_DATA_DIR: {data}
  TRAIN_CROP_SIZE: 32
  TEST_CROP_SIZE: 32
  VAL_CROP_RATIO: 1.0
TRAIN:
  BATCH_SIZE: {batch}
  EVAL_PERIOD: 0
  CHECKPOINT_PERIOD: 1
  MIXED_PRECISION: fp32
  TENSORBOARD: False
TEST:
  BATCH_SIZE: 8
AUG:
  AA_TYPE: ""
  RE_PROB: 0.0
SOLVER:
  BASE_LR: 0.001
  WARMUP_EPOCHS: 1.0
  MAX_EPOCH: {epochs}
DATA_LOADER:
  NUM_WORKERS: 1
  PIN_MEMORY: False
LOG_PERIOD: 1
"""


@dataclass(frozen=True)
class Experiment:
    cfg: Path
    epochs: int
    steps_per_epoch: int

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    """A tiny run_net config on a generated ImageNet-style folder tree (train/<class>, val/<class>)."""
    root = tmp_path_factory.mktemp("slurm_exp")
    rng = np.random.default_rng(0)
    for split, count in (("train", TRAIN_IMAGES_PER_CLASS), ("val", 4)):
        for name, colour in _CLASSES.items():
            folder = root / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CONFIG.format(data=root / "data", batch=BATCH_SIZE, epochs=EPOCHS))
    return Experiment(cfg, EPOCHS, len(_CLASSES) * TRAIN_IMAGES_PER_CLASS // BATCH_SIZE)


@dataclass
class JobInfo:
    job_id: str
    state: str
    restarts: int


def job_info(job_id: str, env: dict[str, str]) -> JobInfo:
    """State of a job from ``scontrol`` (the local cluster keeps finished jobs for MinJobAge, no sacct)."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], env=env, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    fields = dict(re.findall(r"(\w+)=(\S*)", out))
    return JobInfo(job_id, fields["JobState"], int(fields.get("Restarts", 0)))


def logs_tail(job_dir: Path, lines: int = 40) -> str:
    """The end of every log of a job folder, for failure messages."""
    parts = []
    for path in sorted(job_dir.glob("submitit/*_log.*")) + sorted(job_dir.glob("log*.txt")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(parts)


def wait_for(
    predicate: Callable[[], bool], what: str, job_dir: Path, timeout: float = JOB_TIMEOUT_S, poll: float = 0.5
) -> None:
    """Poll ``predicate`` until it holds; fail with the job's logs after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{logs_tail(job_dir)}")
        time.sleep(poll)


def wait_for_state(job_id: str, env: dict[str, str], states: set[str], job_dir: Path) -> JobInfo:
    """Wait until the job reaches one of ``states``; a job that ends in another state fails the test."""
    final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
    seen: list[JobInfo] = []

    def reached() -> bool:
        seen.append(job_info(job_id, env))
        if seen[-1].state in final - states:
            pytest.fail(f"job {job_id} ended {seen[-1].state} while waiting for {states}\n{logs_tail(job_dir)}")
        return seen[-1].state in states

    wait_for(reached, f"job {job_id} to be {' or '.join(sorted(states))}", job_dir)
    return seen[-1]


def training_step(job_dir: Path) -> int:
    """Highest training step written to ``metrics.jsonl`` so far (0 before the first)."""
    path = job_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [int(m) for m in re.findall(r'"step": (\d+)', path.read_text())]
    return max(steps, default=0)


def run_submit(args: list[str], env: dict[str, str], timeout: float = JOB_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``tools/submit.py`` with ``args``; fails the test with its output when it does not exit 0."""
    proc = subprocess.run(
        [sys.executable, str(SUBMIT), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if proc.returncode:
        pytest.fail(f"submit.py {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def submit_slurm(args: list[str], env: dict[str, str]) -> str:
    """Submit through ``tools/submit.py`` to SLURM; returns the job id."""
    proc = run_submit(["--cluster", "slurm", *args], env)
    found = re.search(r"submitted slurm job (\d+)", proc.stdout + proc.stderr)
    assert found, f"no job id in submit.py's output:\n{proc.stdout}\n{proc.stderr}"
    return found.group(1)


def final_state(job_dir: Path) -> dict:
    """The training state of the last epoch (``checkpoints/last.pyth``)."""
    return torch.load(job_dir / "checkpoints" / "last.pyth", map_location="cpu", weights_only=False)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


def submit_args(exp: Experiment, job_dir: Path, tasks: int) -> list[str]:
    """A CPU job of ``tasks`` processes on one node."""
    return [
        "--cfg", str(exp.cfg), "--job-dir", str(job_dir), "--gpus-per-node", "0", "--tasks-per-node", str(tasks),
        "--cpus-per-task", "1", "--mem-gb", "2", "--time", "15",
    ]  # fmt: skip


def interrupt_and_release(job_id: str, job_dir: Path, env: dict[str, str], command: list[str]) -> JobInfo:
    """Interrupt a running job with ``command`` mid-epoch, wait for its requeue, start it again, wait for the end."""
    wait_for(lambda: training_step(job_dir) >= INTERRUPT_AT_STEP, f"step {INTERRUPT_AT_STEP}", job_dir, poll=0.05)
    subprocess.run(command, env=env, check=True, timeout=30)
    wait_for_state(job_id, env, {"PENDING"}, job_dir)
    # SLURM holds a requeued job for 120 s (its BeginTime); an administrator may start it at once.
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env, check=True, timeout=30)
    return wait_for_state(job_id, env, {"COMPLETED"}, job_dir)


def assert_resumed_mid_training(job_dir: Path, exp: Experiment) -> None:
    """The first run checkpointed and stopped before the end of training; the second resumed from there."""
    task_log = "\n".join(p.read_text() for p in sorted((job_dir / "submitit").glob("*_0_log.err")))
    stop = re.search(r"training stopped at epoch (\d+) iteration (\d+)", task_log)
    assert stop, f"the task did not checkpoint on the signal\n{logs_tail(job_dir)}"
    assert int(stop[1]) * exp.steps_per_epoch + int(stop[2]) < exp.steps, "stopped after training ended"
    assert "restart 1" in task_log, "the requeued task did not see SLURM_RESTART_COUNT=1"
    resumed = re.search(r"resumed from \S+ at epoch (\d+) iteration (\d+)", (job_dir / "log.txt").read_text())
    assert resumed, f"the requeued job did not resume\n{logs_tail(job_dir)}"


def assert_trained(job_dir: Path, exp: Experiment, world_size: int) -> dict:
    """The job folder of a finished job: merged config, metrics, checkpoints, submitit logs and results."""
    state = final_state(job_dir)
    assert (state["epoch"], state["world_size"]) == (exp.epochs, world_size)
    assert (job_dir / "checkpoints" / f"checkpoint_epoch_{exp.epochs:05d}.pyth").is_file()
    assert f"OUTPUT_DIR: {job_dir}" in (job_dir / "config.yaml").read_text()
    assert training_step(job_dir) == exp.steps
    assert '"split": "test"' in (job_dir / "metrics.jsonl").read_text()
    assert len(list((job_dir / "submitit").glob("*_result.pkl"))) == world_size, "a task wrote no result"
    assert len(list((job_dir / "submitit").glob("*_log.out"))) == world_size
    if world_size > 1:
        assert (job_dir / "log.rank1.txt").is_file()
    return state


@pytest.fixture(scope="module")
def reference_job(
    slurm_env: dict[str, str], tiny_experiment: Experiment, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An uninterrupted 1-task SLURM job; returns its job folder."""
    job_dir = tmp_path_factory.mktemp("reference")
    job_id = submit_slurm(submit_args(tiny_experiment, job_dir, tasks=1), slurm_env)
    info = wait_for_state(job_id, slurm_env, {"COMPLETED"}, job_dir)
    assert info.restarts == 0
    return job_dir


@pytest.fixture(scope="module")
def local_two_task_job(tiny_experiment: Experiment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2-task job, submitted with no sbatch on PATH: submitit's local executor runs it here."""
    job_dir = tmp_path_factory.mktemp("local")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = str(Path(sys.executable).parent)  # the venv's bin: python, no SLURM commands
    run_submit(submit_args(tiny_experiment, job_dir, tasks=2), env)
    return job_dir


def test_submit_trains_and_fills_job_folder(reference_job: Path, tiny_experiment: Experiment) -> None:
    assert_trained(reference_job, tiny_experiment, world_size=1)


def test_scontrol_requeue_resumes_to_same_weights(
    slurm_env: dict[str, str], tiny_experiment: Experiment, reference_job: Path, tmp_path: Path
) -> None:
    job_id = submit_slurm(submit_args(tiny_experiment, tmp_path, tasks=1), slurm_env)
    info = interrupt_and_release(job_id, tmp_path, slurm_env, ["scontrol", "requeue", job_id])
    assert info.restarts == 1
    assert_resumed_mid_training(tmp_path, tiny_experiment)
    state = assert_trained(tmp_path, tiny_experiment, world_size=1)
    assert_same_weights(state["model"], final_state(reference_job)["model"])


def test_local_executor_without_sbatch(local_two_task_job: Path, tiny_experiment: Experiment) -> None:
    assert_trained(local_two_task_job, tiny_experiment, world_size=2)


def test_two_task_job_requeues_itself_before_time_limit(
    slurm_env: dict[str, str], tiny_experiment: Experiment, local_two_task_job: Path, tmp_path: Path
) -> None:
    job_id = submit_slurm(submit_args(tiny_experiment, tmp_path, tasks=2), slurm_env)
    # What SLURM sends --signal-delay seconds before the time limit (submitit's --signal=USR2@delay).
    info = interrupt_and_release(job_id, tmp_path, slurm_env, ["scancel", "--signal=USR2", job_id])
    assert info.restarts == 1
    assert_resumed_mid_training(tmp_path, tiny_experiment)
    state = assert_trained(tmp_path, tiny_experiment, world_size=2)
    assert_same_weights(state["model"], final_state(local_two_task_job)["model"])


def detection_iteration(job_dir: Path) -> int:
    """Highest training iteration detectron2 wrote to ``metrics.json`` so far (-1 before the first)."""
    path = job_dir / "metrics.json"
    if not path.exists():
        return -1
    lines = [line for line in path.read_text().splitlines() if '"total_loss"' in line]  # not evaluation results
    return max((int(m) for m in re.findall(r'"iteration": (\d+)', "\n".join(lines))), default=-1)


def test_detection_job_checkpoints_and_requeues_before_time_limit(
    slurm_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """train_net on SLURM: SIGUSR2 mid-training -> checkpoint after the current iteration, requeue, --resume."""
    pytest.importorskip("detectron2.engine", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")
    from projects.detection.data.synthetic_coco import generate_synthetic_coco

    data = tmp_path_factory.mktemp("slurm_coco")
    generate_synthetic_coco(str(data), num_train=8, num_val=2, image_size=(128, 128), max_objects=2, progress=False)
    job_dir = tmp_path_factory.mktemp("detection_job")
    max_iter = 8
    args = [
        "--target", "detection",
        "--cfg", str(ROOT / "projects" / "detection" / "configs" / "mask_rcnn_mvitv2_demo_synthetic.py"),
        "--job-dir", str(job_dir), "--gpus-per-node", "0", "--tasks-per-node", "1", "--cpus-per-task", "1",
        "--mem-gb", "4", "--time", "15",
        f"dataloader.train.dataset.root={data}", "dataloader.train.dataset.prefix=slurm_detection",
        "dataloader.train.num_workers=1", "dataloader.test.num_workers=0", "dataloader.train.total_batch_size=2",
        f"train.max_iter={max_iter}", "train.eval_period=0", "train.checkpointer.period=1000", "train.log_period=1",
    ]  # fmt: skip
    job_id = submit_slurm(args, slurm_env)
    wait_for(lambda: detection_iteration(job_dir) >= 1, "detection iteration 1", job_dir, poll=0.05)
    subprocess.run(["scancel", "--signal=USR2", job_id], env=slurm_env, check=True, timeout=30)
    wait_for_state(job_id, slurm_env, {"PENDING"}, job_dir)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=slurm_env, check=True, timeout=30)
    info = wait_for_state(job_id, slurm_env, {"COMPLETED"}, job_dir)
    assert info.restarts == 1

    task_log = "\n".join(p.read_text() for p in sorted((job_dir / "submitit").glob("*_0_log.err")))
    stop = re.search(r"training stopped at epoch 0 iteration (\d+)", task_log)
    assert stop, f"the task did not checkpoint on the signal\n{logs_tail(job_dir)}"
    stopped_at = int(stop[1])
    assert 1 <= stopped_at < max_iter, "stopped after training ended"
    # The requeued run continues right after the checkpointed iteration: nothing is trained twice or skipped.
    resumed = re.search(r"Resuming from \S+model_(\d+)\.pth at iteration (\d+)", (job_dir / "log.txt").read_text())
    assert resumed, f"the requeued job did not resume\n{logs_tail(job_dir)}"
    assert int(resumed[1]) + 1 == int(resumed[2]) == stopped_at
    assert (job_dir / "model_final.pth").is_file()
    assert detection_iteration(job_dir) == max_iter - 1
    assert "Exception during training" not in (job_dir / "log.txt").read_text()  # a stop is not a failure


def test_detection_target_runs_locally(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``--target detection`` without SLURM: the project's registered target trains and evaluates in a local task."""
    pytest.importorskip("detectron2.engine", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")
    from projects.detection.data.synthetic_coco import generate_synthetic_coco

    data = tmp_path_factory.mktemp("local_coco")
    generate_synthetic_coco(str(data), num_train=4, num_val=2, image_size=(128, 128), max_objects=2, progress=False)
    job_dir = tmp_path_factory.mktemp("local_detection_job")
    args = [
        "--cluster", "local", "--target", "detection",
        "--cfg", str(ROOT / "projects" / "detection" / "configs" / "mask_rcnn_mvitv2_demo_synthetic.py"),
        "--job-dir", str(job_dir), "--gpus-per-node", "0", "--tasks-per-node", "1", "--cpus-per-task", "1",
        "--time", "15",
        f"dataloader.train.dataset.root={data}", "dataloader.train.dataset.prefix=local_detection",
        "dataloader.train.num_workers=0", "dataloader.test.num_workers=0", "dataloader.train.total_batch_size=2",
        "train.max_iter=2", "train.eval_period=0", "train.checkpointer.period=1000", "train.log_period=1",
    ]  # fmt: skip
    run_submit(args, dict(os.environ))
    assert (job_dir / "model_final.pth").is_file(), logs_tail(job_dir)
    assert detection_iteration(job_dir) == 1
    assert len(list((job_dir / "submitit").glob("*_result.pkl"))) == 1


def test_two_node_job_trains_to_the_weights_of_one_node(
    slurm_env: dict[str, str], tiny_experiment: Experiment, local_two_task_job: Path, tmp_path: Path
) -> None:
    """``--nodes 2``, one task per node: two slurmd nodes on this host (tools/slurm_local, MVIT_SLURM_NODES=2)."""
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], env=slurm_env, capture_output=True, text=True, timeout=30)
    if len(set(nodes.stdout.split())) < 2:
        pytest.skip("the cluster has one node; start it with MVIT_SLURM_NODES=2 tools/slurm_local/start.sh")
    # TRAIN.BATCH_SIZE is the batch of one node (PySlowFast's meaning): half of it on each of two nodes is the
    # global batch of the one-node job.
    argv = [*submit_args(tiny_experiment, tmp_path, tasks=1), "--nodes", "2", "TRAIN.BATCH_SIZE", str(BATCH_SIZE // 2)]
    job_id = submit_slurm(argv, slurm_env)
    wait_for_state(job_id, slurm_env, {"COMPLETED"}, tmp_path)
    shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=slurm_env, capture_output=True, text=True)
    assert re.search(r" NumNodes=2 ", shown.stdout), shown.stdout
    state = assert_trained(tmp_path, tiny_experiment, world_size=2)
    assert_same_weights(state["model"], final_state(local_two_task_job)["model"])
