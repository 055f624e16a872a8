#!/usr/bin/env python
"""Print the top-5 classes of images (or videos) under a trained MViTv2.

    python tools/predict.py --cfg configs/DEMO/MVITv2_digits.yaml --checkpoint output/digits/checkpoints/best.pyth \
        data/digits/val/3/0045.png [MORE FILES ...] [--opts KEY VALUE ...]

Weights: any format the core loads (official ``.pyth``, PySlowFast, timm, torchvision, ..., this engine's
checkpoints). Class names: ImageNet's for 1000-class models and Kinetics-400's for 400-class video models
(from torchvision's weights metadata), else the names stored in the checkpoint by training, else the class
folders under ``DATA.PATH_TO_DATA_DIR/train``, else indices. Each file goes through the input loader that a
project registered for its suffix (:func:`mvit.engine.register_input_loader`): images through the
classification project's test transform, videos through the video project's.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from fvcore.common.config import CfgNode  # noqa: E402

from mvit.checkpoint import is_training_state, load_checkpoint, read_checkpoint  # noqa: E402
from mvit.config import load_config  # noqa: E402
from mvit.engine import find_input_loader  # noqa: E402
from mvit.engine.launch import USER_ERRORS, UserError  # noqa: E402
from mvit.engine.plugins import load_projects  # noqa: E402
from mvit.models import create_model  # noqa: E402

__all__ = ["class_names", "main", "predict"]


def class_names(cfg: CfgNode, checkpoint: Optional[dict[str, Any]] = None) -> list[str]:
    """Names of the model's ``MODEL.NUM_CLASSES`` outputs (see the module docstring for the order of sources)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES, _KINETICS400_CATEGORIES

    n = cfg.MODEL.NUM_CLASSES
    video = cfg.DATA.NUM_FRAMES > 1 or len(cfg.MVIT.PATCH_KERNEL) == 3
    if n == 1000 and not video:
        return list(_IMAGENET_CATEGORIES)
    if n == 400 and video:
        return list(_KINETICS400_CATEGORIES)
    stored = (checkpoint or {}).get("class_names")
    if stored and len(stored) == n:
        return list(stored)
    train_dir = os.path.join(cfg.DATA.PATH_TO_DATA_DIR or "", "train")
    if cfg.DATA.PATH_TO_DATA_DIR and os.path.isdir(train_dir):
        folders = sorted(e.name for e in os.scandir(train_dir) if e.is_dir() and not e.name.startswith("."))
        if len(folders) == n:
            return folders
    return [f"class {i}" for i in range(n)]


@torch.no_grad()
def predict(model: torch.nn.Module, cfg: CfgNode, path: str) -> torch.Tensor:
    """Class probabilities (K,) of one file (averaged over its views when its loader returns several)."""
    x = find_input_loader(path)(cfg, path)
    single_ndim = 4 if (cfg.DATA.NUM_FRAMES > 1 or len(cfg.MVIT.PATCH_KERNEL) == 3) else 3
    if x.ndim == single_ndim:
        x = x.unsqueeze(0)
    elif x.ndim != single_ndim + 1:
        raise UserError(f"{path}: the input loader returned shape {tuple(x.shape)}, not a {single_ndim}-D input")
    return model(x).float().softmax(dim=-1).mean(dim=0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="config yaml of the model")
    parser.add_argument("--checkpoint", required=True, help="weights (any format the core loads)")
    parser.add_argument("--topk", type=int, default=5, help="classes to print per file (default: %(default)s)")
    parser.add_argument("--ema", action="store_true", help="use the EMA weights of a training checkpoint")
    parser.add_argument("files", nargs="+", help="images (or videos, for video models)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    try:
        for path in args.files:  # fail before the (slow) model set-up
            if not os.path.isfile(path):
                raise UserError(f"{path}: file not found")
        _, extensions = load_projects()
        cfg = load_config(args.cfg_file, args.opts, extensions=extensions)
        model = create_model(cfg).eval()
        ckpt = read_checkpoint(args.checkpoint)
        if args.ema:
            ema = ckpt.get("hooks", {}).get("ema", {}).get("model")
            if ema is None:
                raise UserError(f"{args.checkpoint}: no EMA weights in this checkpoint")
            model.load_state_dict(ema)
        elif is_training_state(ckpt):  # this engine's checkpoint, already read
            model.load_state_dict(ckpt["model"])
        else:  # any other format: the core converts it
            load_checkpoint(model, args.checkpoint, strict=True, log=False)
        names = class_names(cfg, ckpt)
        for path in args.files:
            probs = predict(model, cfg, path)
            top = probs.topk(min(args.topk, probs.numel()))
            print(path)
            for rank, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
                print(f"  {rank}. {100 * p:6.2f}%  {names[i]} ({i})")
    except (*USER_ERRORS, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
