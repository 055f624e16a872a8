#!/usr/bin/env python3
"""Throughput of this MViTv2 against timm (images) and torchvision (video), side by side in one process.

    python tools/benchmark.py --quick                                   # T, fp32 + bf16, batch 16 + train (~2 min)
    python tools/benchmark.py --models t s b video_s --modes fp32 bf16 compile compile_bf16 \\
        --train-modes fp32 bf16 --batch 1 16 --train-batch 8 --rounds 5 --memory --threads 1 --clock cpu --out bench/
    python tools/benchmark.py --agreement                               # fp32 vs bf16 / compiled top-1 agreement
    python tools/benchmark.py --loader --out bench/                      # input pipelines (tools/benchmark_loader.py)
    python tools/benchmark.py --modes freeze int8 --batch 16 --train-batch --threads 1 --clock cpu   # CPU serving

Every configuration (model, task, batch, mode) times ours and the reference in alternating rounds (the order
flips every round) and reports the median of per-round ratios, so drift and other jobs on a shared machine
cancel out as far as they can. Modes: ``fp32`` (eager), ``bf16`` / ``fp16`` (autocast; fp16 trains with a
GradScaler, on GPUs only), ``compile`` / ``compile_bf16`` (``torch.compile``, the reference compiled too).
A mode other than fp32 also times the reference in fp32 eager in the same rounds ("vs ref fp32"). The CPU
serving modes of :func:`mvit.export.optimize_for_cpu` (inference only) time ours against the reference in fp32
eager ("ours / ref" is then against fp32): ``freeze`` / ``freeze_bf16`` (compiled with frozen weights) and
``int8`` (x86 PT2E static quantization calibrated on 272 other views of the agreement photos, then frozen).

Achieved GFLOP/s use the zoo's fvcore counts (one multiply-add = 2 flops here; a training step = 3x the
forward) against the best dense matmul rate measured on the same device and dtype. Peak memory: on a GPU
``torch.cuda.max_memory_allocated``; on a CPU the peak RSS of a fresh process running two steps, above its RSS
before the first step (eager modes only: compilers' own memory would swamp it).

Writes OUT/benchmark.md (table and conditions), OUT/benchmark.png (bar chart) and OUT/benchmark.json.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

import mvit
from mvit.errors import run_cli
from mvit.models import model_info
from mvit.utils.cli import ArgumentParser, import_script


@dataclass(frozen=True)
class Pair:
    """Our zoo model and the reference implementation of the same architecture."""

    ours: str
    library: str  # "timm" or "torchvision"
    reference: str

    @property
    def num_classes(self) -> int:
        return 1000 if self.library == "timm" else 400

    def build_reference(self) -> nn.Module:
        if self.library == "timm":
            import timm

            return timm.create_model(self.reference)
        import torchvision

        return getattr(torchvision.models.video, self.reference)()


PAIRS = {
    "t": Pair("mvitv2_t", "timm", "mvitv2_tiny"),
    "s": Pair("mvitv2_s", "timm", "mvitv2_small"),
    "b": Pair("mvitv2_b", "timm", "mvitv2_base"),
    "video_s": Pair("mvitv2_s_16x4", "torchvision", "mvit_v2_s"),
}
SERVE_MODES = {"freeze": "fp32", "freeze_bf16": "bf16", "int8": "int8"}  # -> optimize_for_cpu's mode
MODES = ("fp32", "bf16", "fp16", "compile", "compile_bf16", *SERVE_MODES)


@dataclass
class Result:
    model: str
    task: str  # "infer" or "train"
    batch: int
    mode: str
    ours_per_s: float
    ref_per_s: float
    ratio: float  # median over rounds of ours/ref throughput, same mode
    ref_fp32_per_s: Optional[float] = None
    ratio_vs_ref_fp32: Optional[float] = None
    ours_gflops: float = 0.0
    peak_fraction: float = 0.0
    ours_mem_mib: Optional[float] = None
    ref_mem_mib: Optional[float] = None
    rounds: List[Dict[str, float]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- runners
def _autocast(mode: str, device: torch.device):
    if mode.endswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if mode == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


_CALIBRATION: Optional[torch.Tensor] = None


def calibration_images() -> torch.Tensor:
    """int8 calibration set: the agreement photos at two other crop scales than evaluated (272 views)."""
    global _CALIBRATION
    if _CALIBRATION is None:
        _CALIBRATION = torch.cat([real_images(scale=scale)[0] for scale in (1.15, 1.6)])
    return _CALIBRATION


def served(model: nn.Module, mode: str, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` through :func:`mvit.export.optimize_for_cpu` in a serving mode (int8: calibrated and quantized)."""
    from mvit.export import optimize_for_cpu

    target = SERVE_MODES[mode]
    calibration = None
    if target == "int8":  # batches of the example's size: a static batch exports every model (timm's too)
        views = calibration_images().to(example.device)
        calibration = views[: len(views) // len(example) * len(example)].split(len(example))
    return optimize_for_cpu(model, target, calibration=calibration, example=example, dynamic_batch=False)


def make_step(model: nn.Module, task: str, mode: str, x: torch.Tensor, num_classes: int) -> Callable[[], None]:
    """One inference batch or one training step (forward, cross-entropy, backward, AdamW) of ``model``."""
    device = x.device
    if mode in SERVE_MODES:
        net = served(model, mode, x)
        return lambda: net(x)
    net = torch.compile(model) if mode.startswith("compile") else model
    if task == "infer":
        model.eval()

        def infer() -> None:
            with torch.inference_mode(), _autocast(mode, device):
                net(x)

        return infer

    model.train()
    target = torch.randint(0, num_classes, (x.shape[0],), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16")

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(mode, device):
            loss = nn.functional.cross_entropy(net(x).float(), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_CLOCK = time.perf_counter


def _timed(step: Callable[[], None], iters: int, device: torch.device) -> float:
    _sync(device)
    start = _CLOCK()
    for _ in range(iters):
        step()
    _sync(device)
    return (_CLOCK() - start) / iters


def make_input(name: str, batch: int, device: torch.device) -> torch.Tensor:
    cfg = mvit.resolve_config(name)
    return torch.randn(batch, cfg.in_chans, *cfg.input_size, device=device)


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Best dense matmul rate (GFLOP/s) of ``torch.mm`` on square matrices, the roofline for % of peak."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = math.inf
    for _ in range(5):
        best = min(best, _timed(lambda: torch.mm(a, b), 2, device))
    return 2 * n**3 / best / 1e9


# ----------------------------------------------------------------------------------------------- memory
def _proc_status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field} field")


def _probe_memory(spec: dict) -> dict:
    """Run in a fresh process: peak RSS (MiB) of two steps above the RSS before them.

    The peak is the kernel's RSS high-water mark (VmHWM), reset just before the steps. (getrusage's ru_maxrss
    would not do: Linux carries it over from the parent across fork and exec.)
    """
    torch.set_num_threads(spec["threads"])
    pair = PAIRS[spec["pair"]]
    torch.manual_seed(0)
    model = mvit.create_model(pair.ours) if spec["which"] == "ours" else pair.build_reference()
    device = torch.device("cpu")
    x = make_input(pair.ours, spec["batch"], device)
    step = make_step(model, spec["task"], spec["mode"], x, pair.num_classes)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = _proc_status_mib("VmRSS")
    step()
    step()
    return {"peak_mib": _proc_status_mib("VmHWM") - before, "rss_before_mib": before}


def peak_memory(pair_key: str, which: str, task: str, batch: int, mode: str, device: torch.device, threads: int):
    """Peak memory (MiB) of a step of one model; None for compiled modes on CPU."""
    if device.type == "cuda":
        return None  # measured in-process by the caller
    if mode.startswith("compile") or mode in SERVE_MODES:
        return None
    spec = dict(pair=pair_key, which=which, task=task, batch=batch, mode=mode, threads=threads)
    out = subprocess.run(
        [sys.executable, __file__, "--probe-memory", json.dumps(spec)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


# ----------------------------------------------------------------------------------------------- benchmark
def bench_config(
    pair_key: str,
    ours: nn.Module,
    ref: nn.Module,
    task: str,
    batch: int,
    mode: str,
    args: argparse.Namespace,
    device: torch.device,
    peaks: Dict[str, float],
) -> Result:
    pair = PAIRS[pair_key]
    x = make_input(pair.ours, batch, device)
    # Serving modes are ours against the reference in fp32 eager (the reference is neither frozen nor quantized).
    steps = {
        "ours": make_step(ours, task, mode, x, pair.num_classes),
        "ref": make_step(ref, task, "fp32" if mode in SERVE_MODES else mode, x, pair.num_classes),
    }
    if mode != "fp32" and mode not in SERVE_MODES:
        steps["ref_fp32"] = make_step(ref, task, "fp32", x, pair.num_classes)
    mem: Dict[str, Optional[float]] = {}
    for name, step in steps.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.warmup):
            step()  # compiles in compiled modes
        if device.type == "cuda":
            mem[name] = torch.cuda.max_memory_allocated(device) / 2**20
    # Enough iterations per round for about args.min_round_time seconds of the slowest model.
    slowest = max(_timed(step, 1, device) for step in steps.values())
    iters = max(1, math.ceil(args.min_round_time / slowest))
    rounds = []
    for r in range(args.rounds):
        names = list(steps) if r % 2 == 0 else list(reversed(steps))
        rounds.append({name: batch / _timed(steps[name], iters, device) for name in names})
    med = {name: statistics.median(rd[name] for rd in rounds) for name in steps}
    flops = 2e9 * model_info(pair.ours).gflops * (3 if task == "train" else 1)
    dtype = torch.bfloat16 if mode.endswith("bf16") else torch.float16 if mode == "fp16" else torch.float32
    peak_key = str(dtype)
    if peak_key not in peaks:
        peaks[peak_key] = matmul_peak(device, dtype)
    ours_gflops = med["ours"] * flops / 1e9
    result = Result(
        model=pair.ours,
        task=task,
        batch=batch,
        mode=mode,
        ours_per_s=med["ours"],
        ref_per_s=med["ref"],
        ratio=statistics.median(rd["ours"] / rd["ref"] for rd in rounds),
        ours_gflops=ours_gflops,
        peak_fraction=ours_gflops / peaks[peak_key],
        rounds=rounds,
    )
    if "ref_fp32" in med:
        result.ref_fp32_per_s = med["ref_fp32"]
        result.ratio_vs_ref_fp32 = statistics.median(rd["ours"] / rd["ref_fp32"] for rd in rounds)
    if args.memory:
        if device.type == "cuda":
            result.ours_mem_mib, result.ref_mem_mib = mem["ours"], mem["ref"]
        else:
            result.ours_mem_mib = peak_memory(pair_key, "ours", task, batch, mode, device, args.threads)
            result.ref_mem_mib = peak_memory(pair_key, "ref", task, batch, mode, device, args.threads)
    return result


def conditions(device: torch.device, args: argparse.Namespace) -> Dict[str, str]:
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": str(torch.get_num_threads()),
        "clock": "process CPU time" if args.clock == "cpu" else "wall time",
        "torch": torch.__version__,
        "load average (1/5/15 min)": " / ".join(f"{v:.1f}" for v in os.getloadavg()),
    }
    with contextlib.suppress(ImportError):
        import timm

        info["timm"] = timm.__version__
    with contextlib.suppress(ImportError):
        import torchvision

        info["torchvision"] = torchvision.__version__
    if device.type == "cpu":
        with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
            info["device"] = f"{names[0]} ({os.cpu_count()} cores)" if names else info["device"]
    return info


def _fmt(value: Optional[float], spec: str = ".1f", suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def markdown(results: List[Result], info: Dict[str, str], peaks: Dict[str, float]) -> str:
    unit = "samples/s (images or clips; per CPU-second with --clock cpu)"
    lines = [
        "| model | reference | task | batch | mode | ours | reference | ours / ref | ours / ref fp32 | "
        "ours GFLOP/s (% of matmul peak) | peak mem ours / ref (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    refs = {p.ours: f"{p.library} {p.reference}" for p in PAIRS.values()}
    for r in results:
        mem = "–" if r.ours_mem_mib is None else f"{r.ours_mem_mib:.0f} / {r.ref_mem_mib:.0f}"
        lines.append(
            f"| {r.model} | {refs[r.model]} | {r.task} | {r.batch} | {r.mode} | {r.ours_per_s:.2f} | "
            f"{r.ref_per_s:.2f} | **{r.ratio:.2f}x** | {_fmt(r.ratio_vs_ref_fp32, '.2f', 'x')} | "
            f"{r.ours_gflops:.0f} ({100 * r.peak_fraction:.0f}%) | {mem} |"
        )
    cond = "; ".join(f"{k}: {v}" for k, v in info.items())
    peak = ", ".join(f"{k.replace('torch.', '')} {v:.0f} GFLOP/s" for k, v in peaks.items())
    return (
        f"Throughput in {unit}, median over alternating rounds; ratios are medians of per-round ratios.\n\n"
        + "\n".join(lines)
        + f"\n\nConditions: {cond}. Matmul peak (torch.mm): {peak}.\n"
    )


def bar_chart(results: List[Result], path: Path, cpu_clock: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.model}\n{r.task} b{r.batch}\n{r.mode}" for r in results]
    xs = range(len(results))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(results)), 4.5))
    width = 0.38
    ax.bar([i - width / 2 for i in xs], [r.ours_per_s for r in results], width, label="ours")
    ax.bar([i + width / 2 for i in xs], [r.ref_per_s for r in results], width, label="reference (timm / torchvision)")
    for i, r in enumerate(results):
        ax.annotate(f"{r.ratio:.2f}x", (i - width / 2, r.ours_per_s), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=7)
    values = [v for r in results for v in (r.ours_per_s, r.ref_per_s)]
    if max(values) > 20 * min(values):
        ax.set_yscale("log")  # video clips and image batches side by side
    ax.set_ylabel("samples / CPU-second" if cpu_clock else "samples / s")
    ax.set_title("MViTv2 throughput, same mode (label: ours / reference)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def merge(paths: List[Path], out: Path) -> None:
    """One table and chart from several runs' benchmark.json (each run keeps its own conditions line)."""
    out.mkdir(parents=True, exist_ok=True)
    results, texts, cpu_clock = [], [], False
    for path in paths:
        run = json.loads(path.read_text())
        cpu_clock |= run["conditions"].get("clock") == "process CPU time"
        part = [Result(**r) for r in run["results"]]
        results += part
        texts.append(markdown(part, run["conditions"], run["matmul_peak"]))
    (out / "benchmark.md").write_text("\n".join(texts))
    bar_chart(results, out / "benchmark.png", cpu_clock)
    print("\n".join(texts))


# ----------------------------------------------------------------------------------------------- agreement
def real_images(size: int = 224, scale: float = 1.3) -> tuple:
    """~136 real photos that ship with scikit-image and scikit-learn: 17 photos x 4 crops x 2 flips.

    The photos are resized to a short side of ``scale * size`` before cropping.

    Returns (images (N, 3, size, size) normalised with ImageNet statistics, source-photo index (N,)).
    """
    import skimage.data
    from sklearn.datasets import load_sample_images

    names = [
        "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
        "camera", "coins", "moon", "grass", "gravel", "brick", "cell", "clock",
    ]  # fmt: skip
    photos = [getattr(skimage.data, n)() for n in names] + list(load_sample_images().images)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    images, labels = [], []
    for label, photo in enumerate(photos):
        img = torch.tensor(photo, dtype=torch.float32) / 255.0
        img = img.unsqueeze(-1).expand(-1, -1, 3) if img.ndim == 2 else img[..., :3]
        img = img.permute(2, 0, 1).unsqueeze(0)
        h, w = img.shape[-2:]
        short = int(size * scale)
        img = nn.functional.interpolate(
            img, size=(short, round(w * short / h)) if h < w else (round(h * short / w), short), mode="bilinear"
        )[0]
        h, w = img.shape[-2:]
        for top, left in [(0, 0), (h - size, w - size), ((h - size) // 2, (w - size) // 2), (0, w - size)]:
            crop = (img[:, top : top + size, left : left + size] - mean) / std
            images += [crop, crop.flip(-1)]
            labels += [label, label]
    return torch.stack(images), torch.tensor(labels)


def agreement(args: argparse.Namespace, device: torch.device) -> str:
    """Top-1 agreement of bf16 / compiled / served (frozen, int8) inference with fp32 eager on real photos, two ways.

    1. The zoo model with its random initial weights, 1000 classes: argmax over near-tied logits, the harshest
       case (small margins flip first); not a measure of accuracy, a measure of numerical agreement.
    2. The same backbone with a linear-probe head fitted (ridge regression, fp32 features of the even-indexed
       views) to tell the 17 source photos apart, evaluated on every view: a head with real margins, closer to
       how a trained classifier's decisions behave.
    """
    images, labels = real_images()
    images = images.to(device)
    torch.manual_seed(0)
    model = mvit.create_model(args.agreement_model).to(device).eval()
    modes = [m for m in args.modes if m != "fp32"] or ["bf16"]

    def logits(mode: str) -> torch.Tensor:
        if mode in SERVE_MODES:
            net = served(model, mode, images[:8])
            net = net.module if args.agreement_uncompiled else net
        else:
            net = torch.compile(model) if mode.startswith("compile") else model
        outs = []
        with torch.inference_mode(), _autocast(mode, device):
            for chunk in images.split(8):  # 136 = 17 x 8: one batch shape, one compile
                outs.append(net(chunk).float())
        return torch.cat(outs)

    lines = [
        f"Top-1 agreement with fp32 eager, {args.agreement_model}, {len(images)} real images "
        "(17 photos from scikit-image / scikit-learn x 4 crops x 2 flips):",
        "",
        "| head | mode | top-1 agreement | max abs logit diff |",
        "|---|---|---|---|",
    ]
    reference = logits("fp32")
    for mode in modes:
        out = logits(mode)
        agree = (out.argmax(1) == reference.argmax(1)).float().mean().item()
        lines.append(f"| random init (1000) | {mode} | {100 * agree:.1f}% | {(out - reference).abs().max():.2e} |")

    with torch.inference_mode():
        feats = torch.cat([model.forward_head(model.forward_features(c), pre_logits=True) for c in images.split(16)])
    train = torch.arange(len(images), device=device) % 2 == 0
    X = torch.cat([feats, torch.ones_like(feats[:, :1])], 1).double()
    Y = nn.functional.one_hot(labels.to(device), int(labels.max()) + 1).double()
    A = X[train].T @ X[train] + 1e-3 * torch.eye(X.shape[1], dtype=X.dtype, device=device)
    W = torch.linalg.solve(A, X[train].T @ Y[train])
    model.reset_classifier(Y.shape[1])
    with torch.no_grad():
        model.head.projection.weight.copy_(W[:-1].T.float())
        model.head.projection.bias.copy_(W[-1].float())
    reference = logits("fp32")
    probe_acc = (reference.argmax(1).cpu() == labels)[~train.cpu()].float().mean().item()
    for mode in modes:
        out = logits(mode)
        agree = (out.argmax(1) == reference.argmax(1)).float().mean().item()
        lines.append(f"| linear probe (17) | {mode} | {100 * agree:.1f}% | {(out - reference).abs().max():.2e} |")
    lines.append(f"\nLinear probe accuracy on held-out views (fp32): {100 * probe_acc:.1f}%.\n")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- main
def pair_key(name: str) -> str:
    """The PAIRS key of a zoo name ("mvitv2_t") or of the key itself ("t"); unknown: the close names."""
    names = {**{p.ours: k for k, p in PAIRS.items()}, **{k: k for k in PAIRS}}
    if name in names:
        return names[name]
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise argparse.ArgumentTypeError(f"unknown model {name!r}{hint} (benchmarked: {', '.join(names)})")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["t"],
        type=pair_key,
        metavar="MODEL",
        help=f"zoo names or their short keys: {', '.join(f'{p.ours} ({k})' for k, p in PAIRS.items())}",
    )
    parser.add_argument("--modes", nargs="+", default=["fp32", "bf16"], choices=MODES)
    parser.add_argument("--train-modes", nargs="*", choices=MODES, help="modes of training steps (default: --modes)")
    parser.add_argument("--batch", nargs="*", type=int, default=[1, 16], help="inference batch sizes")
    parser.add_argument("--train-batch", nargs="*", type=int, default=[8], help="training batch sizes ([] = none)")
    parser.add_argument("--video-batch", nargs="*", type=int, default=[1], help="video batch sizes (inference)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--min-round-time", type=float, default=1.0, help="seconds per model per round (at least)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time (CPU only), steadier than wall time on a machine shared with other jobs",
    )
    parser.add_argument("--memory", action="store_true", help="measure peak memory (CPU: subprocesses)")
    parser.add_argument("--agreement", action="store_true", help="top-1 agreement of the modes with fp32 instead")
    parser.add_argument("--agreement-model", default="mvitv2_t")
    parser.add_argument(
        "--agreement-uncompiled",
        action="store_true",
        help="serving modes: run the (quantized) program eagerly instead of compiling it, e.g. int8 in minutes",
    )
    parser.add_argument("--quick", action="store_true", help="T only, fp32 + bf16, batch 16, train 8, 3 rounds")
    parser.add_argument("--out", type=Path, default=Path("benchmark_out"))
    parser.add_argument("--merge", nargs="+", type=Path, help="merge benchmark.json files into one table and chart")
    parser.add_argument("--loader", action="store_true", help="input pipelines instead (tools/benchmark_loader.py)")
    parser.add_argument("--loader-pipelines", nargs="+", default=["image", "video"], choices=["image", "video"])
    parser.add_argument("--loader-images", type=int, default=64, help="generated JPEGs (--loader)")
    parser.add_argument(
        "--model-rate",
        nargs="*",
        metavar="MODEL=SAMPLES_PER_S",
        help="training throughputs to feed (--loader): loader workers needed for each, e.g. mvitv2_t=3.31",
    )
    parser.add_argument("--probe-memory", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train_modes is None and not args.quick:
        args.train_modes = [m for m in args.modes if m not in SERVE_MODES]
    if set(args.train_modes or ()) & set(SERVE_MODES):
        parser.error(f"--train-modes: {', '.join(SERVE_MODES)} are inference modes")
    if set(args.modes) & set(SERVE_MODES) and args.device != "cpu":
        parser.error(f"--modes {', '.join(SERVE_MODES)} are CPU serving modes: use them with --device cpu")
    if args.quick:
        args.models, args.modes, args.batch, args.train_batch, args.rounds = ["t"], ["fp32", "bf16"], [16], [8], 3
        args.memory, args.warmup, args.train_modes = True, 1, None
    if args.train_modes is None:
        args.train_modes = args.modes
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu measures CPU time: use it with --device cpu")
    if "fp16" in args.modes and args.device == "cpu":
        parser.error("--modes fp16 is for GPUs (autocast float16 with a GradScaler); use bf16 on a CPU")
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.probe_memory:
        print(json.dumps(_probe_memory(json.loads(args.probe_memory))))
        return
    from tqdm import tqdm

    global _CLOCK
    _CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.merge:
        merge(args.merge, args.out)
        return
    if args.loader:
        # A script beside this one, not a package module: loaded by path (also when this file is imported).
        loader_bench = import_script(Path(__file__).with_name("benchmark_loader.py"), "benchmark_loader")
        print(loader_bench.run(args))
        return
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.agreement:
        text = agreement(args, device)
        (args.out / "agreement.md").write_text(text)
        print(text)
        return

    configs = []
    for key in args.models:
        video = PAIRS[key].library == "torchvision"
        for batch in args.video_batch if video else args.batch:
            configs += [(key, "infer", batch, mode) for mode in args.modes]
        for batch in [] if video else args.train_batch:
            configs += [(key, "train", batch, mode) for mode in args.train_modes]
    info = conditions(device, args)
    results: List[Result] = []
    peaks: Dict[str, float] = {}
    models: Dict[str, tuple] = {}
    for key, task, batch, mode in tqdm(
        configs, desc="benchmark", unit="config", disable=None
    ):  # None: off without a tty
        if key not in models:
            torch.manual_seed(0)
            models = {key: (mvit.create_model(PAIRS[key].ours).to(device), PAIRS[key].build_reference().to(device))}
        ours, ref = models[key]
        result = bench_config(key, ours, ref, task, batch, mode, args, device, peaks)
        results.append(result)
        tqdm.write(
            f"{result.model} {task} b{batch} {mode}: ours {result.ours_per_s:.2f}/s ref {result.ref_per_s:.2f}/s "
            f"ratio {result.ratio:.2f}"
            + (f" (vs ref fp32 {result.ratio_vs_ref_fp32:.2f})" if result.ratio_vs_ref_fp32 else "")
        )
    info["load average after"] = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    text = markdown(results, info, peaks)
    (args.out / "benchmark.md").write_text(text)
    (args.out / "benchmark.json").write_text(
        json.dumps({"conditions": info, "matmul_peak": peaks, "results": [asdict(r) for r in results]}, indent=1)
    )
    bar_chart(results, args.out / "benchmark.png", args.clock == "cpu")
    print(text)


if __name__ == "__main__":
    run_cli(main)
