"""train_net.py end to end on the generated set: a few iterations, COCO evaluation, and --resume."""

import json
import os

import pytest

pytest.importorskip("detectron2.engine", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")

from projects.detection import train_net  # noqa: E402

DEMO = os.path.join(
    os.path.dirname(__file__), "..", "..", "projects", "detection", "configs", "mask_rcnn_mvitv2_demo_synthetic.py"
)


def _iterations(metrics_json: str) -> list:
    with open(metrics_json) as f:
        return [json.loads(line)["iteration"] for line in f if line.strip() and "total_loss" in line]


def _demo_argv(root: str, out, prefix: str, *overrides: str) -> list:
    """train_net's command line for the demo config on the generated set, checkpointing every iteration."""
    return [
        "--config-file", DEMO,
        f"dataloader.train.dataset.root={root}",
        f"dataloader.train.dataset.prefix={prefix}",
        f"train.output_dir={out}",
        "train.checkpointer.period=1",
        "train.eval_period=100",
        *overrides,
    ]  # fmt: skip


def _user_error_lines(argv: list, capsys) -> list:
    """Run train_net as its command line does; it must exit 2. Returns its ``error:`` lines."""
    from mvit.errors import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: train_net.invoke_main(argv))
    assert exit_info.value.code == 2
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def test_train_evaluate_resume(synthetic_root, tmp_path):
    out = str(tmp_path / "run")
    # Flags (--resume, --eval-only) go before the key=value overrides, which take the rest of the line.
    common = [
        "--config-file", DEMO,
        f"dataloader.train.dataset.root={synthetic_root}",
        "dataloader.train.dataset.prefix=test_train_net",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "dataloader.train.total_batch_size=2",
        f"train.output_dir={out}",
        "train.log_period=1",
        "train.checkpointer.period=2",
    ]  # fmt: skip
    results = train_net.main(train_net.parse_args(common + ["train.max_iter=3", "train.eval_period=3"]))
    assert set(results) == {"bbox", "segm"} and all("AP50" in results[task] for task in results)
    for name in ("model_0000001.pth", "model_final.pth", "last_checkpoint", "config.yaml", "init_report.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert _iterations(os.path.join(out, "metrics.json")) == [0, 1, 2]

    # --resume continues after the last checkpoint (iteration 2) instead of starting again.
    resumed = train_net.main(train_net.parse_args(["--resume", *common, "train.max_iter=5", "train.eval_period=5"]))
    assert _iterations(os.path.join(out, "metrics.json")) == [0, 1, 2, 3, 4]
    with open(os.path.join(out, "log.txt")) as f:
        assert "Resuming from" in f.read()

    # --eval-only with the final weights gives exactly the metrics of the run's last evaluation.
    final = os.path.join(out, "model_final.pth")
    evaluated = train_net.main(train_net.parse_args(["--eval-only", *common, f"train.init_checkpoint={final}"]))
    assert set(evaluated) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        assert evaluated[task] == pytest.approx(resumed[task], nan_ok=True), task


def test_stop_request_checkpoints_and_resume_continues(synthetic_root, tmp_path):
    from mvit.runtime import preemption

    out = str(tmp_path / "run")
    common = [
        "--config-file", DEMO,
        f"dataloader.train.dataset.root={synthetic_root}",
        "dataloader.train.dataset.prefix=test_train_net_stop",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "dataloader.train.total_batch_size=2",
        f"train.output_dir={out}",
        "train.log_period=1",
        "train.checkpointer.period=100",
        "train.max_iter=3",
        "train.eval_period=100",
    ]  # fmt: skip
    # A stop requested before training (as SIGUSR2 / SIGTERM would through the SLURM launcher): the first
    # iteration runs, is checkpointed, and the script exits with the "run me again" code.
    preemption.request_stop("test: time limit near")
    try:
        assert train_net.invoke_main(common) == preemption.PREEMPTED_EXIT_CODE
    finally:
        preemption.clear_stop_request()
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_0000000.pth"
    assert not os.path.exists(os.path.join(out, "model_final.pth"))  # no final save / evaluation after a stop

    train_net.main(train_net.parse_args(["--resume", *common]))
    with open(os.path.join(out, "log.txt")) as f:
        assert "model_0000000.pth at iteration 1" in f.read()
    assert _iterations(os.path.join(out, "metrics.json"))[-2:] == [1, 2]
    assert os.path.isfile(os.path.join(out, "model_final.pth"))


def test_two_cpu_processes_train_and_evaluate(synthetic_root, tmp_path):
    """--num-gpus 2 without a GPU: two gloo processes, DDP on CPU, evaluation gathered over both ranks."""
    out = tmp_path / "ddp"
    code = train_net.invoke_main(
        [
            "--config-file", DEMO, "--num-gpus", "2", "--dist-url", "auto",
            f"dataloader.train.dataset.root={synthetic_root}",
            "dataloader.train.dataset.prefix=test_train_net_ddp",
            "dataloader.train.num_workers=0",
            "dataloader.test.num_workers=0",
            "dataloader.train.total_batch_size=2",
            f"train.output_dir={out}",
            "train.log_period=1",
            "train.max_iter=2",
            "train.eval_period=2",
        ]
    )  # fmt: skip
    assert code == 0
    assert (out / "model_final.pth").is_file()
    log = (out / "log.txt").read_text()
    assert (
        "DistributedDataParallel" in log
        or "world size: 2" in log.lower()
        or "Rank of current process: 0. World size: 2" in log
    )
    assert _iterations(str(out / "metrics.json")) == [0, 1]


def test_nan_loss_stops_naming_the_iteration_and_the_last_good_checkpoint(
    synthetic_root, tmp_path, capsys, monkeypatch
):
    from detectron2.modeling import GeneralizedRCNN
    from detectron2.utils.events import get_event_storage

    forward = GeneralizedRCNN.forward

    def diverging(self, batched_inputs):  # the loss of iteration 1 and later is NaN
        out = forward(self, batched_inputs)
        if self.training and get_event_storage().iter >= 1:
            out = {k: v * float("nan") for k, v in out.items()}
        return out

    monkeypatch.setattr(GeneralizedRCNN, "forward", diverging)
    out = tmp_path / "run"
    argv = _demo_argv(
        synthetic_root, out, "test_train_net_nan",
        "dataloader.train.num_workers=0", "dataloader.train.total_batch_size=2", "train.max_iter=3",
    )  # fmt: skip
    lines = _user_error_lines(argv, capsys)
    assert len(lines) == 1 and "NaN at iteration=1" in lines[0], lines
    assert str(out / "model_0000000.pth") in lines[0]
    assert not (out / "model_0000001.pth").exists()  # nothing saved after the bad step


def test_a_killed_process_is_one_line_naming_its_rank_and_the_checkpoint(tmp_path, capsys, monkeypatch):
    """detectron2's launcher (torch's join) stops the other processes when one dies; the exception it raises
    becomes one line with the global rank and what --resume continues from, and the lost-rank exit code."""
    import torch.multiprocessing as mp

    from mvit.runtime.launch import RANK_LOST_EXIT_CODE

    out = tmp_path / "run"
    out.mkdir()
    (out / "last_checkpoint").write_text("model_0000009.pth")

    def killed(*args, **kwargs):
        raise mp.ProcessExitedException("process 1 terminated with signal SIGKILL", 1, 4321, -9, "SIGKILL")

    monkeypatch.setattr(train_net, "launch", killed)
    argv = ["--num-gpus", "2", "--num-machines", "2", "--machine-rank", "1", "--dist-url", "tcp://127.0.0.1:1"]
    assert train_net.invoke_main(argv + ["--config-file", DEMO, f"train.output_dir={out}"]) == RANK_LOST_EXIT_CODE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: rank 3 (pid 4321) was killed by signal SIGKILL; the job stopped; run the same command with --resume "
        "to continue from model_0000009.pth"
    ]


def test_killed_loader_worker_is_one_line_and_resume_continues(synthetic_root, tmp_path, capsys, monkeypatch):
    """A loader worker killed as by the out-of-memory killer (SIGKILL) while loading its 6th item (some iterations
    in, the worker loads ahead): one line naming it and the checkpoint, exit 2; --resume then finishes the run."""
    import signal

    import torch.utils.data
    from detectron2.data import DatasetMapper

    marker = tmp_path / "kill"
    marker.touch()
    mapper = DatasetMapper.__call__
    calls = {"n": 0}

    def killing(self, record):  # in the forked worker
        calls["n"] += 1
        if torch.utils.data.get_worker_info() is not None and calls["n"] == 6 and marker.exists():
            marker.unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        return mapper(self, record)

    monkeypatch.setattr(DatasetMapper, "__call__", killing)
    monkeypatch.setattr(train_net, "do_test", lambda cfg, model: {})  # the final evaluation is not at stake here
    out = tmp_path / "run"
    argv = _demo_argv(
        synthetic_root, out, "test_train_net_worker",
        "dataloader.train.num_workers=1", "dataloader.train.total_batch_size=1", "train.max_iter=8",
    )  # fmt: skip
    lines = _user_error_lines(argv, capsys)
    assert not marker.exists()
    assert len(lines) == 1 and "was killed by signal 9 (SIGKILL), probably by the out-of-memory killer" in lines[0]
    assert f"run the same command with --resume (last checkpoint: {out}/model_000000" in lines[0], lines
    assert train_net.invoke_main(["--resume", *argv]) == 0
    assert _iterations(os.path.join(out, "metrics.json"))[-1] == 7
