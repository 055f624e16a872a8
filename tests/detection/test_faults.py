"""Faults of the detection project: a checkpoint write cut short, and two machines on one host."""

from __future__ import annotations

import builtins
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("detectron2.engine", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")

from mvit.checkpoint.safe_io import torch_load  # noqa: E402
from projects.detection.checkpoint import SafeDetectionCheckpointer  # noqa: E402


class _Died(BaseException):
    """Stands for the process being killed: nothing after it in the writer runs (not even ``except Exception``)."""


class _DiesMidWrite:
    """A writable file whose first ``write`` puts half of the bytes on disk and then 'kills the process'."""

    def __init__(self, f) -> None:
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise _Died

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


@pytest.fixture
def die_while_writing(monkeypatch):
    """``die_while_writing(name)``: from now on, the first file opened for writing whose name starts with
    ``name`` (the final name or a temporary one beside it) is cut in the middle of its first write."""
    real_open = builtins.open

    def arm(name: str) -> None:
        armed = [True]

        def dying_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if armed[0] and "w" in mode and os.path.basename(os.fspath(file)).startswith(name):
                armed[0] = False
                return _DiesMidWrite(f)
            return f

        monkeypatch.setattr(builtins, "open", dying_open)

    return arm


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 4))


@pytest.mark.parametrize(
    "cut",
    [
        "last_checkpoint",  # the pointer itself: an empty or half name would be read on resume
        "model_0000001.pth",  # the same name saved again (a stop request at a periodic checkpoint's iteration)
        "model_0000003.pth",  # a new checkpoint: no partial file may be left under its name
    ],
)
def test_a_save_cut_short_leaves_the_previous_checkpoint_for_resume(tmp_path, die_while_writing, cut):
    saved = _model(0)
    checkpointer = SafeDetectionCheckpointer(saved, str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    expected = {k: v.clone() for k, v in saved.state_dict().items()}

    with torch.no_grad():
        for p in saved.parameters():
            p.add_(1.0)
    die_while_writing(cut)
    name = "model_0000001" if cut == "model_0000001.pth" else "model_0000003"
    with pytest.raises(_Died):
        checkpointer.save(name, iteration=3)

    resumed = _model(1)
    reader = SafeDetectionCheckpointer(resumed, str(tmp_path))
    assert reader.has_checkpoint()
    assert reader.get_checkpoint_file() == str(tmp_path / "model_0000001.pth")
    assert reader.resume_or_load("", resume=True)["iteration"] == 1
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, expected[key]), key
    if cut == "model_0000003.pth":  # only a temporary file is left, which detectron2 never lists
        assert not (tmp_path / "model_0000003.pth").exists()
        assert reader.get_all_checkpoint_files() == [str(tmp_path / "model_0000001.pth")]


ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "projects" / "detection" / "configs" / "mask_rcnn_mvitv2_demo_synthetic.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _final_model(out: Path) -> dict:
    with open(out / "model_final.pth", "rb") as f:
        return torch_load(f, str(out / "model_final.pth"))["model"]


def test_two_machines_on_one_host_train_to_the_weights_of_one_machine(synthetic_root, tmp_path):
    """``--num-machines 2 --machine-rank 0/1`` (one gloo process each) against ``--num-gpus 2`` on one machine."""
    opts = [
        "--config-file", str(DEMO),
        f"dataloader.train.dataset.root={synthetic_root}",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "dataloader.train.total_batch_size=2",
        "train.max_iter=3",
        "train.eval_period=100",
        "train.checkpointer.period=100",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = [sys.executable, str(ROOT / "projects" / "detection" / "train_net.py")]
    one = tmp_path / "one"
    single = [*script, "--num-gpus", "2", "--dist-url", f"tcp://127.0.0.1:{_free_port()}", *opts]
    done = subprocess.run([*single, f"train.output_dir={one}"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    two, url = tmp_path / "two", f"tcp://127.0.0.1:{_free_port()}"
    machines = [
        subprocess.Popen(
            [
                *script,
                "--num-gpus",
                "1",
                "--num-machines",
                "2",
                "--machine-rank",
                str(rank),
                "--dist-url",
                url,
                *opts,
                f"train.output_dir={two}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    try:
        for proc in machines:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in machines:
            if proc.poll() is None:
                proc.kill()
    expected, got = _final_model(one), _final_model(two)
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        assert torch.equal(value, got[name]), name
