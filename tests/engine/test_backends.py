"""TF32 and cuDNN flags of a run (issue 19, item 8), set up for a mocked CUDA device on the CPU."""

from __future__ import annotations

import pytest
import torch

from mvit.config import ConfigError
from mvit.engine import runner

from .conftest import small_cfg


@pytest.fixture
def restore_backend_flags():
    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved[1], saved[2]


@pytest.mark.parametrize(
    ("device", "key", "precision", "tf32", "benchmark"),
    [
        ("cuda", "auto", "high", True, True),  # the GPU default: TF32
        ("cuda", "highest", "highest", False, True),
        ("cuda", "medium", "medium", True, True),
        ("cpu", "auto", "highest", False, False),
    ],
)
def test_run_setup_sets_and_logs_matmul_precision_and_cudnn_flags(
    tmp_path, monkeypatch, restore_backend_flags, device, key, precision, tf32, benchmark
):
    monkeypatch.setattr(
        runner, "get_device", lambda cfg: torch.device(device, 0) if device == "cuda" else torch.device(device)
    )
    torch.set_float32_matmul_precision("medium" if precision != "medium" else "highest")  # something to change
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = not tf32, not benchmark
    cfg = small_cfg(**{"OUTPUT_DIR": str(tmp_path), "TRAIN.MATMUL_PRECISION": key})
    assert runner._setup(cfg).type == device
    assert torch.get_float32_matmul_precision() == precision
    assert torch.backends.cuda.matmul.allow_tf32 is (precision != "highest")
    assert torch.backends.cudnn.allow_tf32 is tf32 and torch.backends.cudnn.benchmark is benchmark
    lines = [line for line in (tmp_path / "log.txt").read_text().splitlines() if "float32 matmul precision" in line]
    assert len(lines) == 1 and f"backends on {device}: float32 matmul precision {precision} (" in lines[0]
    assert f"TRAIN.MATMUL_PRECISION {key}" in lines[0]
    assert lines[0].endswith(f"cudnn.benchmark {'on' if benchmark else 'off'}")


def test_cudnn_benchmark_can_be_turned_off(tmp_path, monkeypatch, restore_backend_flags):
    monkeypatch.setattr(runner, "get_device", lambda cfg: torch.device("cuda", 0))
    runner._setup(small_cfg(**{"OUTPUT_DIR": str(tmp_path), "TRAIN.CUDNN_BENCHMARK": False}))
    assert torch.backends.cudnn.benchmark is False


def test_an_unknown_precision_is_one_config_error(tmp_path, restore_backend_flags):
    with pytest.raises(ConfigError, match=r"^TRAIN.MATMUL_PRECISION: 'tf32' is not one of \['auto', 'highest'"):
        runner._setup(small_cfg(**{"OUTPUT_DIR": str(tmp_path), "DEVICE": "cpu", "TRAIN.MATMUL_PRECISION": "tf32"}))
