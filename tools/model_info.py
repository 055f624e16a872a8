#!/usr/bin/env python3
"""Parameters and FLOPs (fvcore) of a zoo model or a config, per operator type.

    python tools/model_info.py mvitv2_t
    python tools/model_info.py --cfg configs/K400/MVITv2_S_16x4.yaml
    python tools/model_info.py --zoo-table          # docs/model_zoo.md's table (all models: takes minutes)
    python tools/model_info.py --weights            # the released weights: tags for pretrained= / zoo:<tag>

FLOPs follow fvcore: batch 1, one multiply-add counted as one flop. The explicit attention path is used
for counting because fvcore has no handle for fused attention kernels.
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, Optional, Sequence, TextIO, Tuple

import torch

import mvit
from mvit import resolve_config
from mvit.errors import UserError, run_cli
from mvit.models import MViT, model_info
from mvit.utils.cli import ArgumentParser, model_argument


def count(model: MViT) -> Tuple[int, float, Dict[str, float]]:
    """(parameters, GFLOPs, GFLOPs per operator type) at the model's build size."""
    from fvcore.nn import FlopCountAnalysis

    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(1, model.in_chans, *model.config.input_size)
    flops = FlopCountAnalysis(model.eval(), x)
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    by_op = {op: v / 1e9 for op, v in sorted(flops.by_operator().items(), key=lambda kv: -kv[1])}
    return params, flops.total() / 1e9, by_op


def zoo_table(names: Optional[Sequence[str]] = None, stream: Optional[TextIO] = None) -> str:
    """Markdown table of the zoo models (default: all), each built and its FLOPs counted; progress on ``stream``
    (stderr: a bar per model on a terminal, and each row as it is done)."""
    from tqdm import tqdm

    names = list(names or mvit.list_models())
    stream = stream or sys.stderr
    print(f"building and counting the FLOPs of {len(names)} zoo models: this takes minutes", file=stream, flush=True)
    rows = [
        "| model | input | params | GFLOPs | published top-1 (reference) |",
        "|---|---|---:|---:|---:|",
    ]
    for name in tqdm(names, desc="zoo table", unit="model", file=stream, disable=None):  # None: off without a tty
        info = model_info(name)
        model = MViT(resolve_config(name, attn_impl="explicit"))
        params, gflops, _ = count(model)
        size = "x".join(str(s) for s in model.config.input_size)
        top1 = f"{info.published_top1:.1f}" if info.published_top1 else "-"
        rows.append(f"| `{name}` | {size} | {params:,} | {gflops:.3f} | {top1} |")
        tqdm.write(rows[-1], file=stream)
    return "\n".join(rows)


def weights_table() -> str:
    """Markdown table of the registered releases (``mvit.models.weights``)."""
    from mvit.models.weights import get_weights, list_weights

    rows = ["| tag | loads into | publisher | data | published | file |", "|---|---|---|---|---|---|"]
    for tag in list_weights():
        w = get_weights(tag)
        into = f"`{w.arch}`" + (f" ({w.detector} detector)" if w.detector else "")
        if w.overrides:
            into += " with " + ", ".join(f"{k}={v}" for k, v in sorted(w.overrides.items()))
        metrics = ", ".join(f"{k} {v:g}" for k, v in w.metrics.items()) or "-"
        rows.append(f"| `{tag}` | {into} | {w.publisher} | {w.dataset} | {metrics} | [{w.file_name}]({w.url}) |")
    return "\n".join(rows)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="zoo name (see --list)")
    parser.add_argument("--cfg", help="experiment config yaml instead of a zoo name")
    parser.add_argument("--list", action="store_true", help="list zoo names")
    parser.add_argument(
        "--zoo-table",
        action="store_true",
        help="print the markdown table of every zoo model (takes minutes: each model is built and its FLOPs counted)",
    )
    parser.add_argument("--weights", action="store_true", help="print the table of released weights (tags)")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    if args.list:
        print("\n".join(mvit.list_models()))
        return
    if args.zoo_table:
        print(zoo_table())
        return
    if args.weights:
        print(weights_table())
        return
    if not (args.name or args.cfg):
        raise UserError("give a zoo name or --cfg FILE")
    with model_argument(args.cfg or args.name):
        model = MViT(resolve_config(args.cfg or args.name, attn_impl="explicit"))
    params, gflops, by_op = count(model)
    print(f"model: {args.cfg or args.name}  input: {tuple(model.config.input_size)}")
    print(f"parameters: {params:,}")
    print(f"GFLOPs: {gflops:.3f}")
    for op, value in by_op.items():
        print(f"  {op:<24s} {value:10.3f}  ({100 * value / gflops:5.1f}%)")


if __name__ == "__main__":
    run_cli(main)
