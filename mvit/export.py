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

CPU serving (:func:`optimize_for_cpu`): ``torch.compile`` with inductor's weight freezing (weights become graph
constants, so layouts and casts are folded once), in fp32, bf16 autocast or int8 (PyTorch 2 export quantization
for x86: ``X86InductorQuantizer``, static per-channel int8 weights and per-tensor activations, calibrated)::

    served = optimize_for_cpu(model, "int8", calibration=images.split(16))
    logits = served(x)                                    # compiles on the first call of each batch size
    save_served(served, "mvitv2_t.int8.pt2")              # the quantized torch.export program and its mode
    served = load_served("mvitv2_t.int8.pt2")             # compiled again (with freezing) in the loading process
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Iterable, Optional, Union

import torch
from torch import nn

__all__ = [
    "DEFAULT_OPSET",
    "SERVE_MODES",
    "ServedModel",
    "example_input",
    "export_onnx",
    "export_program",
    "load_served",
    "onnx_max_abs_diff",
    "optimize_for_cpu",
    "quantize_int8",
    "run_onnx",
    "save_served",
]

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


# ----------------------------------------------------------------------------------------------- CPU serving
SERVE_MODES = ("fp32", "bf16", "int8")
_MODE_KEY = "mvit_serve_mode"  # extra file of a saved served program: the mode it runs in


def _pt2e():
    """prepare_pt2e, convert_pt2e and the x86 quantizer: in torchao for torch >= 2.10, in torch.ao before."""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError:
        try:
            from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torch.ao.quantization.quantizer import x86_inductor_quantizer as x86
        except ImportError:
            raise ImportError(
                "int8 serving needs PyTorch 2 export quantization: pip install torchao (or mvit[export])"
            ) from None
    return prepare_pt2e, convert_pt2e, x86


def _batches(calibration: Union[torch.Tensor, Iterable[torch.Tensor]]) -> Iterable[torch.Tensor]:
    return calibration.split(16) if isinstance(calibration, torch.Tensor) else calibration


def quantize_int8(
    model: nn.Module,
    calibration: Union[torch.Tensor, Iterable[torch.Tensor]],
    example: Optional[torch.Tensor] = None,
    dynamic_batch: bool = True,
    reduce_range: Optional[bool] = None,
) -> torch.export.ExportedProgram:
    """Post-training static int8 quantization of the model's linear and convolution layers (x86 quantizer).

    Args:
        model: an :class:`mvit.models.MViT` (put in eval mode here; not modified).
        calibration: input batches (or one tensor, split into batches of 16) that set the activation ranges: a
            few hundred real images or augmented views; random noise gives ranges real inputs exceed.
        example: example input for the export; default :func:`example_input`.
        dynamic_batch: keep the batch dimension dynamic in the returned program.
        reduce_range: activations in 7 bits (0-127); default: on CPUs without VNNI (AVX512-VNNI or AMX), whose
            int8 GEMMs add pairs of u8 x s8 products in int16 and would saturate with 8-bit activations.

    Returns:
        The quantized ``ExportedProgram`` (quantize / dequantize pairs around int8 weights and activations);
        ``.module()`` runs it as a reference implementation, :func:`optimize_for_cpu` compiles it to int8 kernels.
    """
    prepare_pt2e, convert_pt2e, x86 = _pt2e()
    model.eval()
    example = example_input(model) if example is None else example
    if reduce_range is None:
        reduce_range = not (torch.cpu._is_vnni_supported() or torch.cpu._is_amx_tile_supported())
    config = x86.get_default_x86_inductor_quantization_config(reduce_range=reduce_range)
    quantizer = x86.X86InductorQuantizer().set_global(config)
    with torch.no_grad():
        graph = torch.export.export(model, (example,), dynamic_shapes=_dynamic_shapes(dynamic_batch)).module()
        with warnings.catch_warnings():  # max pooling of a float input (the skip path) stays float, as intended
            warnings.filterwarnings("ignore", "The input of maxpool", UserWarning)
            prepared = prepare_pt2e(graph, quantizer)
        seen = 0
        for batch in _batches(calibration):
            prepared(batch)
            seen += len(batch)
        if not seen:
            raise ValueError("quantize_int8: the calibration data holds no input")
        converted = convert_pt2e(prepared)
        # Exported again so that the int8 graph is a program that torch.export.save can write.
        return torch.export.export(converted, (example,), dynamic_shapes=_dynamic_shapes(dynamic_batch))


class ServedModel:
    """A model compiled for CPU inference: ``served(x)`` returns float32 logits without gradients.

    ``module`` is what runs (the eager model, or for int8 the quantized program's module), ``program`` the
    ``ExportedProgram`` :func:`save_served` writes. Inductor compiles with ``freezing`` on the first call of each
    input shape (weights as constants: pre-packed GEMM weights, casts and quantization folded).
    """

    def __init__(self, module: nn.Module, mode: str, program: Optional[torch.export.ExportedProgram] = None):
        self.module, self.mode, self.program = module, mode, program
        self.compiled = torch.compile(module)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch._inductor.config as inductor_config

        bf16 = torch.autocast("cpu", dtype=torch.bfloat16) if self.mode == "bf16" else contextlib.nullcontext()
        with torch.no_grad(), inductor_config.patch(freezing=True), bf16:
            return self.compiled(x).float()


def optimize_for_cpu(
    model: nn.Module,
    mode: str = "fp32",
    calibration: Union[torch.Tensor, Iterable[torch.Tensor], None] = None,
    example: Optional[torch.Tensor] = None,
    dynamic_batch: bool = True,
) -> ServedModel:
    """The model compiled for CPU inference with frozen weights, in fp32, bf16 (autocast) or int8.

    Args:
        model: an :class:`mvit.models.MViT` (put in eval mode; int8 leaves it unchanged).
        mode: ``"fp32"``, ``"bf16"`` (autocast: a speed-up on CPUs with AMX or AVX512-BF16 only) or ``"int8"``
            (static quantization, see :func:`quantize_int8`; on CPUs with VNNI / AMX int8 the kernels are fastest).
        calibration: int8 only, required: input batches that set the activation ranges.
        example: example input of the int8 export; default :func:`example_input`.
        dynamic_batch: int8: export with a dynamic batch dimension (False: calibrate and serve at the example's
            batch size, for models whose export specialises it).

    Returns:
        A :class:`ServedModel`; the first call of each batch size compiles (minutes for a zoo model on a small CPU).
    """
    if mode not in SERVE_MODES:
        raise ValueError(f"optimize_for_cpu: mode must be one of {', '.join(SERVE_MODES)}, got {mode!r}")
    model.eval()
    if mode != "int8":
        if calibration is not None:
            raise ValueError(f"optimize_for_cpu: calibration is for int8, not {mode}")
        return ServedModel(model, mode)
    if calibration is None:
        raise ValueError("optimize_for_cpu: int8 needs calibration inputs (a few hundred real images)")
    program = quantize_int8(model, calibration, example, dynamic_batch)
    return ServedModel(program.module(), mode, program)


def save_served(served: ServedModel, path: Union[str, os.PathLike], example: Optional[torch.Tensor] = None) -> Path:
    """Write a served model as a ``torch.export`` program (``.pt2``) that records its mode.

    int8 writes the quantized program; fp32 and bf16 write the float program (bf16 autocast is applied on load).
    Inductor's compiled code is not saved: :func:`load_served` compiles again, in the process that serves.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = served.program
    if program is None:
        program = export_program(served.module, example)
    torch.export.save(program, str(path), extra_files={_MODE_KEY: served.mode})
    return path


def load_served(path: Union[str, os.PathLike]) -> ServedModel:
    """A :class:`ServedModel` from a file of :func:`save_served` (compiled on its first call)."""
    extra = {_MODE_KEY: ""}
    program = torch.export.load(str(path), extra_files=extra)
    mode = extra[_MODE_KEY]
    if mode not in SERVE_MODES:
        raise ValueError(f"{path}: not a served model of mvit.export.save_served (no serving mode recorded)")
    if mode == "int8":
        _pt2e()  # registers the quantize / dequantize ops the program calls
    return ServedModel(program.module(), mode, program)
