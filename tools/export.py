#!/usr/bin/env python3
"""Export a zoo model (or a config) to ONNX and/or a torch.export program, check it against eager PyTorch and
report the export's peak memory (RSS of this process).

    python tools/export.py mvitv2_t --pretrained --out exports/           # ONNX (opset 18) + .pt2, dynamic batch
    python tools/export.py mvitv2_s_16x4 --checkpoint k400.pyth --formats onnx --opset 17   # exports/k400.onnx
    python tools/export.py mvitv2_t --random-weights --name trial         # exports/trial.onnx + trial.pt2
    python tools/export.py --torchvision-mvit-v2-s --memory-cap-gib 12    # the reference's (legacy) ONNX export
    python tools/export.py mvitv2_t --pretrained --serve int8 --calibration photos/   # exports/mvitv2_t.int8.pt2

The weights are named: ``--checkpoint FILE``, ``--pretrained [TAG]`` (the released weights) or ``--random-weights``
(for timing and memory figures). Outputs are named ``--name``, by default the checkpoint's stem or the model's name.

``--serve`` writes a ``torch.export`` program for ``mvit.export.load_served`` (int8: the quantized program,
calibrated on the images of a folder or a tensor file), and checks it, compiled with frozen weights, against eager.

Each export runs in this process; run one model per invocation for a clean peak-memory figure.
"""

from __future__ import annotations

import json
import pickle
import resource
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

import mvit
from mvit.errors import UserError, run_cli
from mvit.export import (
    DEFAULT_OPSET,
    SERVE_MODES,
    example_input,
    export_onnx,
    export_program,
    load_served,
    onnx_max_abs_diff,
    optimize_for_cpu,
    save_served,
)
from mvit.utils.cli import ArgumentParser, model_argument, unwritable_reason


def _status_gib(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident) of this process from /proc/self/status, in GiB.

    (Not getrusage's ru_maxrss: Linux carries it over from the parent across fork and exec.)
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    raise RuntimeError(f"/proc/self/status has no {field} field")


def _rss_gib() -> float:
    return _status_gib("VmRSS")


def _peak_gib() -> float:
    return _status_gib("VmHWM")


def export_reference_legacy(out: Path, opset: int) -> dict:
    """torchvision's mvit_v2_s through the TorchScript-based exporter (the path of pytorch/vision#7003)."""
    import torchvision

    model = torchvision.models.video.mvit_v2_s().eval()
    x = torch.randn(1, 3, 16, 224, 224)
    start, before = time.time(), _rss_gib()
    path = out / "torchvision_mvit_v2_s_legacy.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset)
    return {"file": str(path), "seconds": time.time() - start, "rss_before_gib": before, "peak_rss_gib": _peak_gib()}


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_calibration(path: Path, model: torch.nn.Module, limit: int = 512) -> torch.Tensor:
    """Calibration inputs: a ``.pt`` tensor (N, C, ...) at the model's input size, or a folder of images (resized,
    centre-cropped to the input size, ImageNet-normalised; image models only)."""
    size = tuple(model.config.input_size)
    if path.is_file():
        try:
            x = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError) as err:
            raise UserError(
                f"--calibration {path}: not a tensor file torch.load reads ({type(err).__name__})"
            ) from None
        want = (model.config.in_chans, *size)
        if not isinstance(x, torch.Tensor) or x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise UserError(
                f"--calibration {path}: expected a tensor of shape (N, {', '.join(map(str, want))}), got {got}"
            )
        return x[:limit].float()
    if not path.is_dir():
        raise UserError(f"--calibration {path}: no such file or folder")
    if len(size) != 2:
        raise UserError(
            f"--calibration {path}: a folder of images calibrates image models; give video clips as a .pt tensor"
        )
    from PIL import Image
    from torchvision.transforms import v2

    transform = v2.Compose(
        [v2.PILToTensor(), v2.Resize(min(size)), v2.CenterCrop(size), v2.ToDtype(torch.float32, scale=True),
         v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )  # fmt: skip
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise UserError(f"--calibration {path}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return torch.stack([transform(Image.open(f).convert("RGB")) for f in files])


def serve(model: torch.nn.Module, args, stem: str) -> dict:
    """Write the served program of ``--serve`` and check it (compiled, frozen) against eager fp32."""
    calibration = None
    if args.serve == "int8":
        if args.calibration is None:
            raise UserError("--serve int8 needs --calibration: a folder of images or a .pt tensor (N, C, ...)")
        calibration = load_calibration(args.calibration, model)
    start = time.time()
    x = example_input(model, batch_size=args.batch)
    served = optimize_for_cpu(model, args.serve, calibration=calibration, example=x)
    path = save_served(served, args.out / f"{stem}.{args.serve}.pt2", example=x)
    report = {"file": str(path), "mode": args.serve, "seconds": round(time.time() - start, 1)}
    if calibration is not None:
        report["calibration_inputs"] = len(calibration)
    if not args.no_check:
        check = calibration[: args.batch + 1] if calibration is not None else None
        check = example_input(model, batch_size=args.batch + 1, seed=1) if check is None else check
        with torch.no_grad():
            expected = model(check)
        out = load_served(path)(check)
        report["max_abs_diff"] = (out - expected).abs().max().item()
        report["top1_agreement"] = (out.argmax(1) == expected.argmax(1)).float().mean().item()
    report["peak_rss_gib"] = _peak_gib()
    return report


def _output_name(args) -> str:
    """The stem of the output files; checks that exactly one source of weights is named (random ones explicitly)."""
    sources = [f for f, given in (("--checkpoint", args.checkpoint), ("--pretrained", args.pretrained),
               ("--random-weights", args.random_weights)) if given]  # fmt: skip
    if len(sources) > 1:
        raise UserError(f"give one source of weights, not {' and '.join(sources)}")
    if not sources and not args.torchvision_mvit_v2_s:
        raise UserError("which weights? give --checkpoint FILE, --pretrained [TAG] or --random-weights")
    if args.name is not None:
        if not args.name or args.name != Path(args.name).name or args.name in (".", ".."):
            raise UserError(f"--name {args.name!r}: a file name without folders (the folder is --out)")
        return args.name
    if args.checkpoint:  # a file, a URL or zoo:<tag>
        tag = args.checkpoint.removeprefix("zoo:")
        return tag if tag != args.checkpoint else Path(args.checkpoint.split("?")[0]).stem
    # A zoo name or weights tag as it is ("mvitv2_t.fb_in1k"), a yaml by its stem.
    return Path(args.model).stem if args.model.endswith((".yaml", ".yml")) else args.model


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="mvitv2_t", help="zoo name, weights tag or config yaml")
    parser.add_argument("--checkpoint", help="weights in any format mvit.checkpoint reads")
    parser.add_argument(
        "--pretrained",
        nargs="?",
        const=True,
        default=False,
        metavar="TAG",
        help="the released weights of the zoo model (or the tag named, see mvit.models.weights.list_weights())",
    )
    parser.add_argument(
        "--random-weights", action="store_true", help="export random weights (for timing and memory figures)"
    )
    parser.add_argument(
        "--name", help="file name (no suffix) of the outputs (default: the checkpoint's stem, else the model's name)"
    )
    parser.add_argument("--formats", nargs="+", default=["onnx", "torch"], choices=["onnx", "torch"])
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument(
        "--exporter", choices=["dynamo", "torchscript"], default="dynamo", help="torch.onnx.export's exporter"
    )
    parser.add_argument("--batch", type=int, default=2, help="example batch size (not 1: it would be specialised)")
    parser.add_argument("--static-batch", action="store_true", help="fix the batch size instead of a dynamic one")
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with eager outputs")
    parser.add_argument("--out", type=Path, default=Path("exports"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--memory-cap-gib", type=float, default=None, help="address-space cap for this process")
    parser.add_argument("--torchvision-mvit-v2-s", action="store_true", help="export the reference model instead")
    parser.add_argument(
        "--serve", choices=SERVE_MODES, help="write a CPU serving program (NAME.MODE.pt2) instead of --formats"
    )
    parser.add_argument(
        "--calibration", type=Path, help="--serve int8: a folder of images or a .pt tensor (N, C, ...), 512 at most"
    )
    args = parser.parse_args(argv)
    for flag in ("batch", "threads", "opset"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.memory_cap_gib is not None and args.memory_cap_gib <= 0:
        raise UserError(f"--memory-cap-gib must be positive, got {args.memory_cap_gib}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_cap_gib:
        cap = int(args.memory_cap_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    stem = _output_name(args)
    reason = unwritable_reason(args.out, create=True)  # before any model is built
    if reason:
        raise UserError(f"--out {args.out}: cannot write there ({reason})")

    if args.torchvision_mvit_v2_s:
        try:
            report = export_reference_legacy(args.out, args.opset)
        except MemoryError:
            report = {"error": f"MemoryError under the {args.memory_cap_gib} GiB cap", "peak_rss_gib": _peak_gib()}
        print(json.dumps(report, indent=1))
        return

    with model_argument(args.model):
        model = mvit.create_model(args.model, checkpoint=args.checkpoint, pretrained=args.pretrained).eval()
    x = example_input(model, batch_size=args.batch)
    report = {"model": args.model, "params": sum(p.numel() for p in model.parameters()), "rss_model_gib": _rss_gib()}
    if args.serve:
        report["serve"] = serve(model, args, stem)
        print(json.dumps(report, indent=1))
        return
    if "torch" in args.formats:
        start = time.time()
        program = export_program(model, x, dynamic_batch=not args.static_batch)
        path = args.out / f"{stem}.pt2"
        torch.export.save(program, str(path))
        report["torch_export"] = {"file": str(path), "seconds": round(time.time() - start, 1)}
        if not args.no_check:
            check = example_input(model, batch_size=args.batch + 1, seed=1)
            with torch.no_grad():
                diff = (torch.export.load(str(path)).module()(check) - model(check)).abs().max().item()
            report["torch_export"]["max_abs_diff"] = diff
        report["torch_export"]["peak_rss_gib"] = _peak_gib()
    if "onnx" in args.formats:
        start = time.time()
        path = export_onnx(
            model,
            args.out / f"{stem}.onnx",
            x,
            opset=args.opset,
            dynamic_batch=not args.static_batch,
            dynamo=args.exporter == "dynamo",
        )
        report["onnx"] = {
            "file": str(path),
            "opset": args.opset,
            "exporter": args.exporter,
            "seconds": round(time.time() - start, 1),
        }
        report["onnx"]["peak_rss_gib"] = _peak_gib()
        report["onnx"]["size_mib"] = round(path.stat().st_size / 2**20, 1)
        if not args.no_check:
            check = example_input(model, batch_size=args.batch + 1, seed=1)
            report["onnx"]["max_abs_diff_onnxruntime"] = onnx_max_abs_diff(path, model, check)
    report["peak_rss_gib"] = _peak_gib()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    run_cli(main)
