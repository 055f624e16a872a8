"""train_net's NUM_GPUS / CUDA checks on the CPU with mocks of ``torch.cuda`` (issue 19 item 12): one line, exit 2,
before any process starts; ``train.device=cpu`` is the user asking for the CPU."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("detectron2.engine", reason="detectron2 is not installed (bash tools/install_detectron2.sh)")

from mvit.errors import ConfigError  # noqa: E402
from projects.detection import train_net  # noqa: E402

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEMO = os.path.join(ROOT, "projects", "detection", "configs", "mask_rcnn_mvitv2_demo_synthetic.py")


def _fake_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_90"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")


def _not_launched(*_args, **_kwargs):
    raise AssertionError("processes were launched")


@pytest.mark.parametrize(
    "gpus, argv, message",
    [
        (0, ["--num-gpus", "1", "train.device=cuda"], "train.device=cuda with --num-gpus 1 asks for GPUs but CUDA is not available"),
        (1, ["--num-gpus", "2", "train.device=cuda"], "train.device=cuda with --num-gpus 2 asks for 2 GPU(s) on this machine but 1 are visible"),
    ],
)  # fmt: skip
def test_gpus_that_are_not_there_stop_before_launch(monkeypatch, gpus, argv, message):
    _fake_gpus(monkeypatch, gpus)
    monkeypatch.setattr(train_net, "launch", _not_launched)
    with pytest.raises(ConfigError) as err:
        train_net.invoke_main(["--config-file", DEMO, *argv])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cpu_asked_for_is_not_checked(monkeypatch):
    _fake_gpus(monkeypatch, 0)
    launched = []
    monkeypatch.setattr(train_net, "launch", lambda main, num_gpus, **kw: launched.append(num_gpus))
    assert train_net.invoke_main(["--config-file", DEMO, "--num-gpus", "2", "train.device=cpu"]) == 0
    assert launched == [2]
