#!/usr/bin/env python
"""Print the top-5 classes of images (or videos) under a trained MViTv2.

    python tools/predict.py --cfg configs/DEMO/MVITv2_digits.yaml --checkpoint output/digits/checkpoints/best.pyth \
        data/digits/val/3/0045.png [MORE FILES ...] [--opts KEY VALUE ...]

    python tools/predict.py --cfg configs/IN1K/MVITv2_T.yaml --pretrained photo.jpg   # mvitv2_t.fb_in1k

Weights: ``--checkpoint`` in any format the core loads (official ``.pyth``, PySlowFast, timm, torchvision, ...,
this engine's checkpoints; a URL or ``zoo:<tag>`` too), or ``--pretrained``: the release of the config's
``MVIT.ARCH`` (another release: ``--checkpoint zoo:<tag>``), from torch.hub's cache, downloaded when missing.

Class names, in order: the names a training checkpoint stores, the data set's
(``DATA.PATH_TO_DATA_DIR/classes.txt``, one per line, or the class folders of ``train/``), the released
weights' class set (ImageNet-1k, Kinetics-400, through torchvision's public weights metadata), else indices.

Each file goes through the input loader that a project registered for its suffix
(:func:`mvit.data.register_input_loader`): images through the classification project's test transform,
videos through the video project's.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional, Sequence

import torch
from fvcore.common.config import CfgNode

from mvit import create_model
from mvit.checkpoint import is_training_state, load_checkpoint, read_checkpoint
from mvit.config import load_config
from mvit.data import find_input_loader
from mvit.errors import USER_ERROR_EXIT_CODE, CheckpointError, UserError, report, run_cli
from mvit.models.weights import class_names as weights_class_names
from mvit.models.weights import get_weights
from mvit.runtime.projects import load_projects
from mvit.utils.cli import ArgumentParser

# The projects whose input loaders read the files (images, videos) and whose config keys the yaml may use.
PROJECTS = ("projects.classification", "projects.video")

__all__ = ["class_names", "main", "predict"]


def class_names(cfg: CfgNode, checkpoint: Optional[dict[str, Any]] = None, class_set: str = "") -> list[str]:
    """Names of the model's ``MODEL.NUM_CLASSES`` outputs (see the module docstring for the order of sources).

    ``class_set``: the released weights' set (``Weights.class_set``); without one, a 1000-class image model is
    taken as ImageNet-1k and a 400-class video model as Kinetics-400, the sets of this project's releases.
    """
    n = cfg.MODEL.NUM_CLASSES
    stored = (checkpoint or {}).get("class_names")
    if stored and len(stored) == n:
        return list(stored)
    root = cfg.DATA.PATH_TO_DATA_DIR
    if root and os.path.isfile(os.path.join(root, "classes.txt")):
        with open(os.path.join(root, "classes.txt")) as f:
            listed = [line.strip() for line in f if line.strip()]
        if len(listed) == n:
            return listed
    train_dir = os.path.join(root or "", "train")
    if root and os.path.isdir(train_dir):
        folders = sorted(e.name for e in os.scandir(train_dir) if e.is_dir() and not e.name.startswith("."))
        if len(folders) == n:
            return folders
    if not class_set:
        video = cfg.DATA.NUM_FRAMES > 1 or len(cfg.MVIT.PATCH_KERNEL) == 3
        class_set = {(1000, False): "imagenet-1k", (400, True): "kinetics-400"}.get((n, video), "")
    released = weights_class_names(class_set) if class_set else None
    if released and len(released) == n:
        return released
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


def _load_state(model: torch.nn.Module, state: dict[str, Any], path: str, cfg_file: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # torch lists every mismatched key; the first line names the problem
        raise CheckpointError(f"{path}: does not fit the model of {cfg_file}: {report(err)}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="config yaml of the model")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="weights: a file in any format the core loads, a URL or zoo:<tag>")
    source.add_argument(
        "--pretrained",
        action="store_true",
        help="the released weights of the config's MVIT.ARCH (another release: --checkpoint zoo:<tag>)",
    )
    parser.add_argument("--topk", type=int, default=5, help="classes to print per file (default: %(default)s)")
    parser.add_argument("--ema", action="store_true", help="use the EMA weights of a training checkpoint")
    parser.add_argument("files", nargs="+", help="images (or videos, for video models)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    try:
        args = parser.parse_args(argv)
        for path in args.files:  # fail before the (slow) model set-up
            if not os.path.isfile(path):
                raise UserError(f"{path}: file not found")
        _, extensions = load_projects(PROJECTS)
        cfg = load_config(args.cfg_file, args.opts, extensions=extensions)
        model = create_model(cfg).eval()
        class_set = ""
        if args.pretrained:
            if not cfg.MVIT.ARCH:
                raise UserError(
                    f"{args.cfg_file}: --pretrained needs MVIT.ARCH; name a release: --checkpoint zoo:<tag>"
                )
            args.checkpoint = f"zoo:{get_weights(cfg.MVIT.ARCH).tag}"
        if args.checkpoint.startswith("zoo:"):
            class_set = get_weights(args.checkpoint[len("zoo:") :]).class_set
        ckpt = read_checkpoint(args.checkpoint)
        if args.ema:
            ema = ckpt.get("hooks", {}).get("ema", {}).get("model")
            if ema is None:
                raise UserError(f"{args.checkpoint}: no EMA weights in this checkpoint")
            _load_state(model, ema, args.checkpoint, args.cfg_file)
        elif is_training_state(ckpt):  # this engine's checkpoint, already read
            _load_state(model, ckpt["model"], args.checkpoint, args.cfg_file)
        else:  # any other format: the core converts it
            load_checkpoint(model, args.checkpoint, strict=True, log=False)
        names = class_names(cfg, ckpt, class_set)
        for path in args.files:
            probs = predict(model, cfg, path)
            top = probs.topk(min(args.topk, probs.numel()))
            print(path)
            for rank, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
                print(f"  {rank}. {100 * p:6.2f}%  {names[i]} ({i})")
    except UserError as err:
        print(f"error: {report(err)}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    return 0


if __name__ == "__main__":
    run_cli(main)
