"""torch.export programs and ONNX files (onnxruntime) give the eager logits, with a dynamic batch."""

import pytest
import torch

from mvit.export import example_input, export_onnx, export_program, onnx_max_abs_diff

CASES = [(2, {}), (3, {"cls_embed_on": True})]


@pytest.mark.parametrize("ndim, overrides", CASES)
def test_torch_export_matches_eager(ndim, overrides, make_model):
    model = make_model(ndim, **overrides).eval()
    program = export_program(model)
    x = example_input(model, batch_size=3, seed=1)  # another batch size than the example's
    with torch.no_grad():
        assert (program.module()(x) - model(x)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("ndim, overrides", CASES)
def test_onnx_matches_eager_in_onnxruntime(ndim, overrides, make_model, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = make_model(ndim, **overrides).eval()
    path = export_onnx(model, tmp_path / "model.onnx", opset=17)
    assert path.stat().st_size > 0
    assert onnx_max_abs_diff(path, model, example_input(model, batch_size=3, seed=1)) <= 1e-4


def test_onnx_export_rejects_old_opsets(make_model, tmp_path):
    with pytest.raises(ValueError, match="opset 16"):
        export_onnx(make_model(2), tmp_path / "model.onnx", opset=16)


@pytest.mark.parametrize("ndim, overrides", CASES)
def test_torchscript_onnx_exporter_matches_eager(ndim, overrides, make_model, tmp_path):
    """The older exporter (whose constant folding made torchvision's mvit_v2_s export run out of memory) works."""
    pytest.importorskip("onnxruntime")
    model = make_model(ndim, **overrides).eval()
    path = export_onnx(model, tmp_path / "model.onnx", opset=17, dynamo=False)
    assert onnx_max_abs_diff(path, model, example_input(model, batch_size=3, seed=1)) <= 1e-4
