"""CPU serving (mvit.export.optimize_for_cpu): int8 PT2E quantization agrees with fp32 on a fitted head, the frozen
compile gives the eager logits, and ``tools/export.py --serve`` writes a program that ``load_served`` runs.

The model is the digits demo's (0.3M parameters, 32x32) on scikit-learn's handwritten digits with a ridge-regression
head fitted on its fp32 features: decisions with real margins, as a trained classifier's. Inductor compiles once
in this file (int8, frozen: minutes on a loaded 2-core machine); everything else runs eagerly.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

import mvit
from mvit.errors import UserError
from mvit.export import load_served, optimize_for_cpu, save_served

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs/DEMO/MVITv2_digits.yaml"


def _export_tool():
    spec = importlib.util.spec_from_file_location("export_tool", ROOT / "tools/export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits():
    """1797 digits as the demo's 32x32 inputs: (images, labels, calibration views, held-out views)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16
    x = (nn.functional.interpolate(x, size=32, mode="nearest").expand(-1, 3, -1, -1) - 0.3) / 0.38
    return x.contiguous(), torch.tensor(data.target)


@pytest.fixture(scope="module")
def model(digits):
    """The demo model, random backbone, with a linear head fitted (ridge) on fp32 features of 1000 digits."""
    torch.manual_seed(0)
    model = mvit.create_model(str(CONFIG)).eval()
    x, y = digits
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x[:1000]), pre_logits=True)
    X = torch.cat([feats, torch.ones_like(feats[:, :1])], 1).double()
    Y = nn.functional.one_hot(y[:1000], 10).double()
    W = torch.linalg.solve(X.T @ X + 1e-3 * torch.eye(X.shape[1], dtype=X.dtype), X.T @ Y)
    with torch.no_grad():
        model.head.projection.weight.copy_(W[:-1].T.float())
        model.head.projection.bias.copy_(W[-1].float())
    return model


@pytest.fixture(scope="module")
def held_out(digits, model):
    """512 digits the head was not fitted on, their fp32 eager logits, and the fp32 accuracy on them."""
    x, y = digits
    x, y = x[1200:1712], y[1200:1712]
    with torch.no_grad():
        logits = model(x)
    return x, logits, (logits.argmax(1) == y).float().mean().item()


@pytest.fixture(scope="module")
def int8(digits, model, held_out):
    """The int8 served model (calibrated on 200 other digits) and its compiled logits on the held-out digits."""
    served = optimize_for_cpu(model, "int8", calibration=digits[0][1000:1200].split(50))
    return served, torch.cat([served(chunk) for chunk in held_out[0].split(128)])  # one batch shape: one compile


def test_int8_compiled_agrees_with_fp32(int8, held_out):
    _, reference, accuracy = held_out
    assert accuracy >= 0.8  # the fitted head separates the digits: its decisions have margins
    served, out = int8
    program = served.program.graph_module.code
    assert "quantize_per_tensor" in program and "dequantize_per_channel" in program  # int8 weights and activations
    assert out.dtype == torch.float32 and out.shape == reference.shape
    assert 0 < (out - reference).abs().max().item()  # quantized, not the float graph
    assert (out.argmax(1) == reference.argmax(1)).float().mean().item() >= 0.98


def test_frozen_compile_matches_the_eager_program(int8, held_out):
    """Inductor with frozen weights (int8 kernels, folded weight quantization) computes what the quantized
    program computes eagerly (float quantize / dequantize): equal but for activations rounded one step apart."""
    x, reference, _ = held_out
    served, out = int8
    with torch.no_grad():
        eager = served.module(x)
        assert served.module(x[:3]).shape == (3, 10)  # the program keeps a dynamic batch
    scale = reference.abs().max().item()
    row_diff = (out - eager).abs().amax(1)
    assert (row_diff <= 1e-4 * scale).float().mean().item() >= 0.5  # most digits: the same logits
    assert row_diff.max().item() <= 0.1 * scale  # else an activation rounded one int8 step the other way
    assert (out.argmax(1) == eager.argmax(1)).float().mean().item() >= 0.98


def test_export_tool_serve_int8_writes_a_program_load_served_runs(digits, model, held_out, tmp_path):
    x, reference, _ = held_out
    torch.save(model.state_dict(), tmp_path / "fitted.pth")
    torch.save(digits[0][1000:1200], tmp_path / "calibration.pt")
    _export_tool().main(
        [str(CONFIG), "--checkpoint", str(tmp_path / "fitted.pth"), "--serve", "int8", "--no-check"]
        + ["--calibration", str(tmp_path / "calibration.pt"), "--batch", "8", "--out", str(tmp_path)]
    )
    loaded = load_served(tmp_path / "fitted.int8.pt2")  # named after the checkpoint
    assert loaded.mode == "int8"
    with torch.no_grad():
        out = loaded.module(x)  # the quantized reference graph, eagerly: the file holds the fitted weights
    assert 0 < (out - reference).abs().max().item()
    assert (out.argmax(1) == reference.argmax(1)).float().mean().item() >= 0.98


def test_served_program_round_trip_records_the_mode(model, tmp_path):
    path = save_served(optimize_for_cpu(model, "bf16"), tmp_path / "digits.pt2")
    assert load_served(path).mode == "bf16"
    torch.export.save(torch.export.load(path), tmp_path / "plain.pt2")  # the same program, no mode recorded
    with pytest.raises(ValueError, match="no serving mode recorded"):
        load_served(tmp_path / "plain.pt2")


def test_int8_needs_calibration_and_known_modes(model):
    with pytest.raises(ValueError, match="calibration"):
        optimize_for_cpu(model, "int8")
    with pytest.raises(ValueError, match="fp16"):
        optimize_for_cpu(model, "fp16")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--serve", "int8"], "--serve int8 needs --calibration"),
        (["--serve", "int8", "--calibration", "{tmp}/missing"], "no such file or folder"),
        (["--serve", "int8", "--calibration", "{tmp}/wrong.pt"], r"expected a tensor of shape \(N, 3, 32, 32\)"),
        (["--serve", "int8", "--calibration", "{tmp}"], "no images"),
    ],
)
def test_export_tool_serve_reports_bad_calibration_in_one_line(flags, message, tmp_path):
    torch.save(torch.zeros(4, 3, 16, 16), tmp_path / "wrong.pt")
    flags = [f.format(tmp=tmp_path) for f in flags]
    with pytest.raises(UserError, match=message):
        _export_tool().main([str(CONFIG), "--random-weights", "--out", str(tmp_path / "out"), *flags])
