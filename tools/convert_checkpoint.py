#!/usr/bin/env python3
"""Convert a checkpoint of any supported format into this project's weights format.

    python tools/convert_checkpoint.py MViTv2_T_in1k.pyth mvitv2_t.pyth --model mvitv2_t
    python tools/convert_checkpoint.py mvitv2-tiny_3rdparty_in1k_20220722-db7beeef.pth t.pyth --model mvitv2_t
    python tools/convert_checkpoint.py MViTv2_T_in1k.pyth mvitv2_t.safetensors --model mvitv2_t
    python tools/convert_checkpoint.py --trust-pickle legacy.pyth weights.safetensors   # a file you trust

With ``--model`` (a zoo name or config yaml, plus optional field overrides) the weights are loaded strictly
into that architecture first, so a file that does not match fails here and not later; the output then also
records the model config. Without it only the key names are converted. An output ending in ``.safetensors``
is written as safetensors. Inputs are read without running code from them; a pickle that needs more than
tensors and numpy data is refused unless ``--trust-pickle`` says the file is trusted.
"""

from __future__ import annotations

import argparse
import ast
import os
from typing import Any, Optional, Sequence

from mvit import create_model
from mvit.checkpoint import (
    convert_state_dict,
    detect_format,
    load_checkpoint,
    read_checkpoint,
    save_state,
    save_weights,
    unwrap_state_dict,
)
from mvit.checkpoint.formats import WEIGHTS_FORMAT
from mvit.errors import CheckpointError, UserError, run_cli
from mvit.utils.cli import ArgumentParser, model_argument, unwritable_reason


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item}: expected FIELD=VALUE")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--model", help="zoo name or config yaml to verify against (recommended)")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="MViTConfig overrides")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="read SRC without the pickle allow-list: it can run code, use it only for a file you trust",
    )
    args = parser.parse_args(argv)
    folder = os.path.dirname(os.path.abspath(args.dst))
    reason = unwritable_reason(folder, create=True)  # as tools/export.py: made if missing, before a download
    if reason:
        raise CheckpointError(f"{args.dst}: cannot write there ({folder}: {reason})")
    if args.model:
        with model_argument(f"--model {args.model}"):
            model = create_model(args.model, **_parse_overrides(args.set))
        report = load_checkpoint(model, args.src, strict=True, log=False, trust_pickle=args.trust_pickle)
        save_weights(model, args.dst, extra={"converted_from": report.format})
        print(f"{args.src}: {report.format} -> {args.dst} ({len(report.loaded)} tensors, verified on {args.model})")
    else:
        raw, hint = unwrap_state_dict(read_checkpoint(args.src, trust_pickle=args.trust_pickle))
        fmt = detect_format(raw, hint)
        save_state({"format": WEIGHTS_FORMAT, "model": convert_state_dict(raw, fmt)}, args.dst)
        print(f"{args.src}: {fmt} -> {args.dst} ({len(raw)} tensors, keys renamed only)")
    return 0


if __name__ == "__main__":
    run_cli(main)
