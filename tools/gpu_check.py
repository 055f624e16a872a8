#!/usr/bin/env python3
"""The GPU check of issue 19: the CUDA paths users run, on one GPU, in under 8 minutes; stops at the first failure.

    python tools/gpu_check.py --out gpu_check.md                 # all sections (make gpu-check)
    python tools/gpu_check.py --sections environment numerics    # some
    python tools/gpu_check.py --dry-run                          # on the CPU, what can run there (CI runs this)

Prints one markdown table (section, check, status, detail) and writes it to ``--out``. Status: ``ok``, ``FAIL``
(the run stops there, exit 1), ``skip`` (a package or a file is missing; the detail says which), ``note`` (a
figure reported, nothing asserted).

Sections: environment (CUDA, device, its arch in ``torch.cuda.get_arch_list()``, SDPA backends); numerics (CPU fp32
vs CUDA fp32 with TF32 off; bf16 / fp16 autocast vs fp32; explicit vs fused attention gradients); kernels (profiler
kernel names: flash attention in training, flash / memory-efficient in inference, cuDNN convolutions); memory
(mvitv2_l_40x3 inference at batch 1 and 4, a training step with activation checkpointing); engine (the digits demo
through ``tools/run_net.py`` in fp16 + EMA + accumulation + clipping, bf16, fp32; checkpoint loads on the CPU;
resume; ``NUM_GPUS 2`` on one GPU refused with exit 2; ``torchrun --nproc_per_node 1`` with NCCL); detection (the
synthetic demo, 30 iterations, AMP); speed (``tools/benchmark.py --device cuda`` against timm / torchvision).

Packages. The lent GPU machines have Python 3.12 with torch, torchvision, timm, onnx and onnxruntime only; the
engine section needs scikit-learn (the digits), the detection section detectron2, fvcore, iopath and pycocotools.
Bring them as cp312 wheels (no network there), built here:

    pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \\
        scikit-learn fvcore iopath pycocotools yacs tabulate termcolor portalocker -d .whl
    # detectron2 has no wheel on PyPI: build one for cp312 (tools/install_detectron2.sh) and put it in .whl/
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD

Tolerances (fp32, TF32 off): CUDA vs CPU logits within 1e-3 of the largest |logit| (reduction orders differ);
autocast vs fp32 within 5e-2 (bf16) / 1e-2 (fp16) of the largest |logit|; explicit vs fused attention gradients
within 1e-4 of the largest |gradient| of all parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

import mvit
from mvit.models import MViT, MViTConfig

ROOT = Path(__file__).resolve().parents[1]


class CheckFailed(Exception):
    """A check that did not hold: the run stops."""


class Report:
    """The rows of the summary table; ``ok`` / ``note`` / ``skip`` add a row, ``fail`` adds one and stops."""

    def __init__(self) -> None:
        self.rows: List[tuple] = []
        self.section = ""

    def add(self, check: str, status: str, detail: str = "") -> None:
        self.rows.append((self.section, check, status, detail))
        print(f"[{self.section}] {check}: {status} {detail}", flush=True)

    def ok(self, check: str, detail: str = "") -> None:
        self.add(check, "ok", detail)

    def note(self, check: str, detail: str) -> None:
        self.add(check, "note", detail)

    def skip(self, check: str, detail: str) -> None:
        self.add(check, "skip", detail)

    def expect(self, condition: bool, check: str, detail: str) -> None:
        if not condition:
            self.add(check, "FAIL", detail)
            raise CheckFailed(f"{self.section}: {check}: {detail}")
        self.ok(check, detail)

    def markdown(self, title: str) -> str:
        lines = [f"# {title}", "", "| section | check | status | detail |", "|---|---|---|---|"]
        lines += [f"| {s} | {c} | {st} | {d.replace('|', '/')} |" for s, c, st, d in self.rows]
        return "\n".join(lines) + "\n"


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@contextlib.contextmanager
def _tf32(enabled: bool):
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _model(name: str, dry_run: bool) -> MViT:
    """A zoo model with seeded random weights (no download); for ``--dry-run`` a 2-block stand-in at 32 px."""
    torch.manual_seed(0)
    if dry_run:
        ndim = 3 if "x" in name.split("_")[-1] else 2
        size = (4, 32, 32) if ndim == 3 else (32, 32)
        kw = {}
        if ndim == 3:
            kw = dict(patch_kernel=(3, 7, 7), patch_stride=(2, 4, 4), patch_padding=(1, 3, 3), q_stride=(1, 2, 2),
                      kv_stride_adaptive=(1, 4, 4), rel_pos_temporal=True)  # fmt: skip
        config = MViTConfig.from_stages((1, 1), embed_dim=16, input_size=size, num_classes=5, **kw)
        return MViT(config).eval()
    return mvit.create_model(name).eval()


def _rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float().cpu() - expected.float().cpu()).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


# ---------------------------------------------------------------------------------------------------- sections


def environment(report: Report, device: torch.device, args) -> None:
    report.note(
        "torch", f"{torch.__version__}, CUDA build {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    )
    if device.type != "cuda":
        report.note("device", f"{device} (dry run: no CUDA checks)")
    else:
        report.expect(torch.cuda.is_available(), "CUDA available", f"{torch.cuda.device_count()} device(s)")
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        arches = torch.cuda.get_arch_list()
        report.expect(
            f"sm_{major}{minor}" in arches or any(a.startswith(f"sm_{major}") for a in arches),
            "arch in torch's list",
            f"{name}: sm_{major}{minor}; torch built for {' '.join(arches)}",
        )
    backends = {
        "flash": torch.backends.cuda.flash_sdp_enabled(),
        "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
        "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
        "math": torch.backends.cuda.math_sdp_enabled(),
    }
    report.note("SDPA backends enabled", ", ".join(k for k, v in backends.items() if v))
    missing = [m for m in ("sklearn", "detectron2", "fvcore", "iopath", "pycocotools", "timm") if not _has(m)]
    report.note("optional packages missing", ", ".join(missing) or "none")


def numerics(report: Report, device: torch.device, args) -> None:
    models = ["mvitv2_t", "mvitv2_s_16x4"]
    for name in models:
        model = _model(name, args.dry_run)
        config = model.config
        torch.manual_seed(1)
        x = torch.randn(2, 3, *config.input_size)
        with torch.no_grad():
            if device.type == "cuda":
                expected = model(x)
                with _tf32(False):
                    actual = model.to(device)(x.to(device))
                what = "CUDA fp32 (TF32 off) vs CPU fp32"
            else:  # dry run: fp32 against float64 on the CPU
                expected = model.double()(x.double())
                actual = model.float()(x)
                what = "CPU fp32 vs CPU float64"
            err = _rel_error(actual, expected)
            report.expect(err <= 1e-3, f"{name} {what}", f"max error {err:.2e} of max |logit| (tol 1e-3)")
            model.float().to(device)
            reference = model(x.to(device))
            for dtype, tol in ((torch.bfloat16, 5e-2), (torch.float16, 1e-2)):
                if dtype == torch.float16 and device.type != "cuda":
                    continue  # CPU autocast is bf16 only
                with torch.autocast(device.type, dtype=dtype):
                    low = model(x.to(device))
                err = _rel_error(low, reference)
                report.expect(err <= tol, f"{name} {str(dtype)[6:]} autocast vs fp32", f"{err:.2e} (tol {tol:g})")
    if _has("detectron2") and not args.dry_run:
        from projects.detection.backbone import MViTBackbone  # noqa: F401  (imports detectron2)

        report.note("detection backbone", "imported; compared through the detection section's demo")
    else:
        report.skip(
            "detection backbone", "detectron2 not installed (see the docstring)" if not args.dry_run else "dry run"
        )
    # Explicit vs fused attention gradients (the folded SDPA path), fp32, TF32 off.
    torch.manual_seed(0)
    config = MViTConfig.from_stages((1, 1, 2, 1), embed_dim=32, num_heads=1, input_size=(64, 64), num_classes=5)
    explicit = MViT(config.replace(attn_impl="explicit")).to(device)
    fused = MViT(config.replace(attn_impl="sdpa")).to(device)
    with torch.no_grad():
        for p in explicit.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    fused.load_state_dict(explicit.state_dict())
    x = torch.randn(4, 3, 64, 64, device=device)
    with _tf32(False):
        for model in (explicit, fused):
            model.eval()  # no drop path: both see the same graph; the parameters still need gradients
            model(x).logsumexp(1).mean().backward()
    pairs = [
        (p.grad.cpu(), q.grad.cpu()) for p, q in zip(explicit.parameters(), fused.parameters()) if p.grad is not None
    ]
    scale = max(g.abs().max().item() for g, _ in pairs)  # parameters with ~zero gradients are judged on this scale
    worst = max((g - h).abs().max().item() for g, h in pairs) / scale
    report.expect(worst <= 1e-4, "explicit vs fused attention gradients", f"worst {worst:.2e} (tol 1e-4)")


def _kernel_names(fn: Callable[[], None]) -> List[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.key for e in prof.key_averages()]


def kernels(report: Report, device: torch.device, args) -> None:
    if device.type != "cuda":
        report.skip("kernels", "dry run: profiler kernel names need a GPU")
        return
    model = mvit.create_model("mvitv2_t").to(device)
    x = torch.randn(8, 3, 224, 224, device=device)

    def train_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model.train()(x).float().mean().backward()

    def infer():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            model.eval()(x)

    train_step(), infer()  # warm-up (cuDNN autotuning, lazy init)
    names = _kernel_names(train_step)
    flash = [n for n in names if "flash" in n.lower()]
    report.expect(bool(flash), "training step: flash attention", f"{len(flash)} kernels, e.g. {flash[:1]}")
    names = _kernel_names(infer)
    fused = [n for n in names if any(k in n.lower() for k in ("flash", "fmha", "efficient", "cutlass"))]
    report.expect(bool(fused), "inference: flash / memory-efficient", f"{len(fused)} kernels, e.g. {fused[:1]}")
    conv = [n for n in names if "conv" in n.lower() or "cudnn" in n.lower()]
    native = [n for n in conv if "depthwise" in n.lower() and "cudnn" not in n.lower()]
    status = "note" if native else "ok"
    report.add("pooling convs", status, f"{len(conv)} conv kernels; ATen native (not cuDNN): {native[:2] or 'none'}")


def memory(report: Report, device: torch.device, args) -> None:
    if device.type != "cuda":
        report.skip("memory", "dry run: torch.cuda.max_memory_allocated needs a GPU")
        return
    model = mvit.create_model("mvitv2_l_40x3").to(device).eval()
    size = model.config.input_size
    for batch in (1, 4):
        torch.cuda.empty_cache(), torch.cuda.reset_peak_memory_stats()
        x = torch.randn(batch, 3, *size, device=device)
        base = torch.cuda.memory_allocated()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(x)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
        report.note(f"mvitv2_l_40x3 inference bf16 batch {batch} {size}", f"peak {peak:.2f} GiB above weights+input")
        del x
    model.train().set_grad_checkpointing(True)
    torch.cuda.empty_cache(), torch.cuda.reset_peak_memory_stats()
    x = torch.randn(1, 3, *size, device=device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model(x).float().mean().backward()
    peak = torch.cuda.max_memory_allocated() / 2**30
    report.note("mvitv2_l_40x3 training step, checkpointing, bf16, batch 1", f"peak {peak:.2f} GiB")


def _run(cmd: List[str], timeout: int = 300, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)


def _losses(output_dir: Path) -> List[float]:
    losses = []
    for path in output_dir.rglob("metrics.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)  # raises on inf / nan written as JSON
            if "loss" in record:
                losses.append(float(record["loss"]))
    return losses


def engine(report: Report, device: torch.device, args) -> None:
    if device.type != "cuda":
        report.skip("engine", "dry run: the digits runs need a GPU")
        return
    if not _has("sklearn"):
        report.skip("engine", "scikit-learn not installed (the digits; see the docstring)")
        return
    work = Path(args.workdir)
    data = work / "digits"
    if not data.exists():
        done = _run([sys.executable, "tools/prepare_digits.py", "--out", str(data)])
        report.expect(done.returncode == 0, "prepare digits", done.stderr.strip()[-200:])
    base = ["configs/DEMO/MVITv2_digits.yaml"]
    common = ["DATA.PATH_TO_DATA_DIR", str(data), "NUM_GPUS", "1", "SOLVER.MAX_EPOCH", "2", "TRAIN.EVAL_PERIOD", "1"]
    runs = {
        "fp16 + EMA + accumulation + clipping": [
            "TRAIN.MIXED_PRECISION", "fp16", "TRAIN.EMA_ENABLE", "True", "TRAIN.GRAD_ACCUM_STEPS", "2",
            "SOLVER.CLIP_GRAD_L2NORM", "1.0",
        ],
        "bf16": ["TRAIN.MIXED_PRECISION", "bf16"],
        "fp32": ["TRAIN.MIXED_PRECISION", "fp32"],
    }  # fmt: skip
    from mvit.checkpoint.safe_io import torch_load

    for label, extra in runs.items():
        out = work / label.split()[0]
        cmd = [sys.executable, "tools/run_net.py", "--cfg", *base, *common, "OUTPUT_DIR", str(out), *extra]
        done = _run(cmd, timeout=240)
        report.expect(done.returncode == 0, f"digits {label}", f"exit {done.returncode} {done.stderr.strip()[-300:]}")
        losses = _losses(out)
        report.expect(bool(losses) and all(map(math.isfinite, losses)), f"digits {label}: losses", f"{losses[-3:]}")
        last = next(out.rglob("last.pyth"), None)
        report.expect(last is not None, f"digits {label}: checkpoint", str(last))
        with open(last, "rb") as f:
            torch_load(f, str(last), map_location="cpu")
        report.ok(f"digits {label}: checkpoint loads on the CPU")
        resumed = _run([*cmd[: -len(extra) or None], *extra, "SOLVER.MAX_EPOCH", "3"], timeout=240)
        report.expect(resumed.returncode == 0, f"digits {label}: resume to epoch 3", resumed.stderr.strip()[-300:])
    refused = _run([sys.executable, "tools/run_net.py", "--cfg", *base, *common[:2], "NUM_GPUS", "2",
                    "OUTPUT_DIR", str(work / "two")], timeout=120)  # fmt: skip
    lines = refused.stderr.strip().splitlines()
    report.expect(
        refused.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"),
        "NUM_GPUS 2 on one GPU refused in one line",
        f"exit {refused.returncode}: {lines[-1] if lines else ''}",
    )
    torchrun = _run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "tools/run_net.py", "--cfg", *base,
         *common, "OUTPUT_DIR", str(work / "torchrun")],
        timeout=240,
        env={"NCCL_DEBUG": "WARN"},
    )  # fmt: skip
    report.expect(torchrun.returncode == 0, "torchrun --nproc_per_node 1 (NCCL)", torchrun.stderr.strip()[-300:])


def detection(report: Report, device: torch.device, args) -> None:
    if device.type != "cuda":
        report.skip("detection", "dry run")
        return
    if not _has("detectron2"):
        report.skip("detection", "detectron2 not installed (see the docstring)")
        return
    out = Path(args.workdir) / "detection"
    cmd = [sys.executable, "projects/detection/demo.py", "--max-iter", "30", "--num-train", "40", "--num-val", "10",
           "--root", str(Path(args.workdir) / "synthetic_coco"), "--output", str(out), "train.amp.enabled=True"]  # fmt: skip
    done = _run(cmd, timeout=300)
    report.expect(done.returncode == 0, "synthetic demo, 30 iterations, AMP", done.stderr.strip()[-300:])
    report.expect("AP" in done.stdout + done.stderr, "AP computed", (done.stdout + done.stderr).strip()[-200:])
    report.note("resume", "not run by this script (train_net's --resume); see projects/detection/README.md")


def speed(report: Report, device: torch.device, args) -> None:
    if device.type != "cuda":
        report.skip("speed", "dry run")
        return
    if not _has("timm"):
        report.skip("speed", "timm not installed")
        return
    out = Path(args.workdir) / "benchmark"
    cmd = [sys.executable, "tools/benchmark.py", "--device", "cuda", "--models", "t", "--modes", "fp32", "bf16",
           "--train-modes", "bf16", "--batch", "1", "64", "--train-batch", "64", "--rounds", "3", "--memory",
           "--out", str(out)]  # fmt: skip
    done = _run(cmd, timeout=420)
    report.expect(done.returncode == 0, "tools/benchmark.py --device cuda", done.stderr.strip()[-300:])
    report.note("benchmark table", str(out / "benchmark.md"))


SECTIONS: Dict[str, Callable[[Report, torch.device, argparse.Namespace], None]] = {
    "environment": environment,
    "numerics": numerics,
    "kernels": kernels,
    "memory": memory,
    "engine": engine,
    "detection": detection,
    "speed": speed,
}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, tiny models: what can run without a GPU")
    parser.add_argument("--workdir", default=None, help="scratch folder for runs (default: a temporary one)")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "error: no CUDA device visible (torch.cuda.is_available() is False); use --dry-run on a CPU",
            file=sys.stderr,
        )
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    report = Report()
    start, status = time.time(), 0
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        args.workdir = args.workdir or tmp
        try:
            for name in args.sections:
                report.section = name
                SECTIONS[name](report, device, args)
        except CheckFailed as err:
            print(f"error: {err}", file=sys.stderr)
            status = 1
        except Exception as err:  # noqa: BLE001 (a crash is a failure too: in the table, and the run stops)
            report.add("crashed", "FAIL", f"{type(err).__name__}: {err}"[:300])
            print(f"error: {report.section}: {type(err).__name__}: {err}", file=sys.stderr)
            status = 1
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    table = report.markdown(f"GPU check: {card}, torch {torch.__version__}, {time.time() - start:.0f} s")
    print(table)
    if args.out:
        args.out.write_text(table)
    return status


if __name__ == "__main__":
    sys.exit(main())
