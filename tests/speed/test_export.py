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
    onnx = pytest.importorskip("onnx")
    model = make_model(ndim, **overrides).eval()
    path = export_onnx(model, tmp_path / "model.onnx", opset=17)
    # A valid self-contained file (weights inside), with the named input and output and a symbolic batch axis.
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert not list(tmp_path.glob("*.data"))
    assert [v.name for v in proto.graph.input] == ["input"] and [v.name for v in proto.graph.output] == ["logits"]
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value
    assert onnx_max_abs_diff(path, model, example_input(model, batch_size=3, seed=1)) <= 1e-4


def test_saved_program_loads_and_matches_eager(make_model, tmp_path):
    model = make_model(3, cls_embed_on=True).eval()
    torch.export.save(export_program(model), tmp_path / "model.pt2")
    program = torch.export.load(tmp_path / "model.pt2")
    x = example_input(model, batch_size=3, seed=1)
    with torch.no_grad():
        assert (program.module()(x) - model(x)).abs().max().item() <= 1e-4


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
