"""Deployment: ``torch.export`` programs and ONNX files of MViT models, checked against eager outputs.

Exports run the model in eval mode without gradients, so attention takes its inference path: SDPA with the
decomposed rel-pos bias as a float mask, built from small per-axis terms (q . R_h, q . R_w, q . R_t) by one
broadcast add. No (N x N) index or bias tensor is a constant of the graph: the constant-folding blow-up that
makes torchvision's ``mvit_v2_s`` ONNX export run out of memory (pytorch/vision#7003) does not arise.

Example::

    model = mvit.create_model("mvitv2_t", checkpoint="mvitv2_t.pyth").eval()
    program = export_program(model)                       # torch.export.ExportedProgram, dynamic batch
    path = export_onnx(model, "mvitv2_t.onnx")            # opset 18, dynamic batch
    print(onnx_max_abs_diff(path, model))                 # onnxruntime vs eager, e.g. 2e-6
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

__all__ = ["DEFAULT_OPSET", "example_input", "export_onnx", "export_program", "onnx_max_abs_diff", "run_onnx"]

DEFAULT_OPSET = 18  # the torch.export-based exporter's native opset; 17 works too (converted by onnx)
_MAX_BATCH = 4096


def example_input(model: nn.Module, batch_size: int = 2, seed: int = 0) -> torch.Tensor:
    """A random input at the model's build size: (B, C, H, W) or (B, C, T, H, W).

    A batch of 2 is the default: torch.export specialises a dimension of size 1, which would fix the batch.
    """
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    param = next(model.parameters())
    x = torch.randn(batch_size, config.in_chans, *config.input_size, generator=generator)
    return x.to(device=param.device, dtype=param.dtype)


def _dynamic_shapes(dynamic_batch: bool):
    if not dynamic_batch:
        return None
    return ({0: torch.export.Dim("batch", min=1, max=_MAX_BATCH)},)


def export_program(
    model: nn.Module, example: Optional[torch.Tensor] = None, dynamic_batch: bool = True
) -> torch.export.ExportedProgram:
    """``torch.export`` the model's forward (logits) in eval mode.

    Args:
        model: an :class:`mvit.models.MViT` (put in eval mode here).
        example: example input; default :func:`example_input` (batch 2, build size).
        dynamic_batch: export the batch dimension as dynamic (1 to 4096).

    Returns:
        An ``ExportedProgram``; ``program.module()(x)`` gives the logits.
    """
    model.eval()
    example = example_input(model) if example is None else example
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=_dynamic_shapes(dynamic_batch))


def export_onnx(
    model: nn.Module,
    path: Union[str, os.PathLike],
    example: Optional[torch.Tensor] = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    dynamo: bool = True,
) -> Path:
    """Write the model (logits) to an ONNX file.

    Args:
        model: an :class:`mvit.models.MViT` (put in eval mode here).
        path: output ``.onnx`` file; weights are stored inside it (models under 2 GB).
        example: example input; default :func:`example_input`.
        opset: ONNX opset, 17 or later.
        dynamic_batch: export the batch dimension as dynamic (input "input", output "logits").
        dynamo: the ``torch.export``-based exporter (default); False uses the TorchScript-based one (the exporter
            of pytorch/vision#7003, deprecated by PyTorch).

    Returns:
        The path written.
    """
    if opset < 17:
        raise ValueError(f"export_onnx: opset {opset} is not supported, use 17 or later")
    model.eval()
    example = example_input(model) if example is None else example
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = dict(input_names=["input"], output_names=["logits"])
    with torch.no_grad():
        if not dynamo:
            axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, opset_version=opset, dynamic_axes=axes, **names
            )
            return path
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            dynamic_shapes=_dynamic_shapes(dynamic_batch),
            optimize=True,
            verbose=False,
            **names,
        )
    program.save(str(path), external_data=False)
    return path


def run_onnx(path: Union[str, os.PathLike], x: torch.Tensor, threads: Optional[int] = None) -> torch.Tensor:
    """Logits of an exported file for input ``x``, computed by onnxruntime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.detach().cpu().float().numpy()})
    return torch.from_numpy(logits)


def onnx_max_abs_diff(path: Union[str, os.PathLike], model: nn.Module, x: Optional[torch.Tensor] = None) -> float:
    """Largest absolute difference between onnxruntime's and eager PyTorch's logits for the same input."""
    model.eval()
    x = example_input(model, seed=1) if x is None else x
    with torch.no_grad():
        expected = model(x).float().cpu()
    return (run_onnx(path, x) - expected).abs().max().item()
