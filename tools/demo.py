#!/usr/bin/env python3
"""The README's main job on a small embedded default, end to end on real data that ships in a package.

1. lays out scikit-learn's 1,797 handwritten digits (8x8, 10 classes) as an ImageNet folder tree (data/digits),
2. trains and evaluates a scaled-down MViTv2 (configs/DEMO/MVITv2_digits.yaml) with tools/run_net.py,
3. predicts a few held-out digits with tools/predict.py from the saved checkpoint.

Outputs go to output/digits: log, metrics.jsonl, curves.png, checkpoints. Extra arguments are config overrides
(e.g. ``SOLVER.MAX_EPOCH 5``).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/DEMO/MVITv2_digits.yaml"


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    os.chdir(ROOT)
    opts = list(sys.argv[1:] if argv is None else argv)
    print("== 1/3 data: scikit-learn digits -> data/digits (ImageNet folder tree)", flush=True)
    if _tool("prepare_digits").main(["--out", "data/digits"]) != 0:
        return 1
    print(f"== 2/3 train + evaluate: tools/run_net.py --cfg {CONFIG} {' '.join(opts)}", flush=True)
    run_net = _tool("run_net")
    code = run_net.main(["--cfg", CONFIG, *opts])
    if code != 0:
        return code
    from mvit.config import load_config
    from mvit.runtime.projects import load_projects

    out = load_config(CONFIG, opts, extensions=load_projects(run_net.PROJECTS)[1]).OUTPUT_DIR
    checkpoint = os.path.join(out, "checkpoints", "last.pyth")
    images = sorted(glob.glob("data/digits/val/*/*.png"))[::90][:4]
    print(f"== 3/3 predict held-out digits with {checkpoint}", flush=True)
    code = _tool("predict").main(["--cfg", CONFIG, "--checkpoint", checkpoint, *images])
    print(f"curves: {out}/curves.png   metrics: {out}/metrics.jsonl   log: {out}/log.txt")
    return code


if __name__ == "__main__":
    sys.exit(main())
