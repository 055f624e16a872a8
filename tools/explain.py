#!/usr/bin/env python
"""Explain a prediction: Grad-CAM and attention rollout heat maps over an image or a clip (mvit.explain).

    python tools/explain.py --cfg configs/DEMO/MVITv2_digits.yaml \
        --checkpoint output/digits/checkpoints/best.pyth data/digits/val/3/0045.png --out explain_out

For each file it writes ``<out>/<name>.png`` (the input, the Grad-CAM map and the rollout map over it; a clip
as a strip of frames, one row per map) and ``<out>/<name>.npz`` (the raw maps: ``gradcam`` and ``rollout`` at the
input size, ``gradcam_grid`` / ``rollout_grid`` on their token grids, ``rollout_cls_share``, ``probs``,
``topk``, ``class_names``) and prints the top-k classes.

Weights as in tools/predict.py (``--checkpoint`` in any format the core loads, ``--pretrained``), or
``--random-weights`` (a model as built, to try the tool). Class names and input loading are tools/predict.py's:
an image goes through the classification project's test transform, a video through the video project's
(one clip: the middle one, the centre crop).
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch
from fvcore.common.config import CfgNode

from mvit.api import create_model
from mvit.checkpoint import is_training_state, load_checkpoint, read_checkpoint
from mvit.config import load_config
from mvit.data import find_input_loader
from mvit.errors import UserError, run_cli
from mvit.explain import attention_rollout, grad_cam
from mvit.models import MViT
from mvit.models.weights import get_weights
from mvit.runtime.projects import load_projects
from mvit.utils.cli import ArgumentParser, import_script

_predict = import_script(os.path.join(os.path.dirname(os.path.abspath(__file__)), "predict.py"))
PROJECTS, _load_state, class_names = _predict.PROJECTS, _predict._load_state, _predict.class_names

__all__ = ["add_model_args", "load_model", "main"]

METHODS = ("gradcam", "rollout")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """--cfg, the weights (--checkpoint / --pretrained / --random-weights), --ema and --opts."""
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="config yaml of the model")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="weights: a file in any format the core loads, a URL or zoo:<tag>")
    source.add_argument("--pretrained", action="store_true", help="the released weights of the config's MVIT.ARCH")
    source.add_argument("--random-weights", action="store_true", help="the model as built (to try the tool)")
    parser.add_argument("--ema", action="store_true", help="use the EMA weights of a training checkpoint")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")


def load_model(args: argparse.Namespace) -> Tuple[CfgNode, MViT, list]:
    """The config, the model in eval mode with its weights, and its class names (tools/predict.py's rules)."""
    _, extensions = load_projects(PROJECTS)
    cfg = load_config(args.cfg_file, args.opts, extensions=extensions)
    model = create_model(cfg).eval()
    ckpt: dict[str, Any] = {}
    class_set = ""
    if args.random_weights:
        return cfg, model, class_names(cfg)
    if args.pretrained:
        if not cfg.MVIT.ARCH:
            raise UserError(f"{args.cfg_file}: --pretrained needs MVIT.ARCH; name a release: --checkpoint zoo:<tag>")
        args.checkpoint = f"zoo:{get_weights(cfg.MVIT.ARCH).tag}"
    if args.checkpoint.startswith("zoo:"):
        class_set = get_weights(args.checkpoint[len("zoo:") :]).class_set
    elif "://" not in args.checkpoint and not os.path.isfile(args.checkpoint):
        raise UserError(f"{args.checkpoint}: checkpoint file not found")
    ckpt = read_checkpoint(args.checkpoint)
    if args.ema:
        ema = ckpt.get("hooks", {}).get("ema", {}).get("model")
        if ema is None:
            raise UserError(f"{args.checkpoint}: no EMA weights in this checkpoint")
        _load_state(model, ema, args.checkpoint, args.cfg_file)
    elif is_training_state(ckpt):
        _load_state(model, ckpt["model"], args.checkpoint, args.cfg_file)
    else:
        load_checkpoint(model, args.checkpoint, strict=True, log=False)
    return cfg, model, class_names(cfg, ckpt, class_set)


def load_input(cfg: CfgNode, path: str) -> torch.Tensor:
    """One model input (1, C, [T,] H, W) of a file: the single test view (middle clip, centre crop)."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found")
    try:
        loader = find_input_loader(path)
    except ValueError as err:
        raise UserError(str(err)) from None
    cfg = cfg.clone()
    cfg.defrost()
    if "NUM_ENSEMBLE_VIEWS" in cfg.TEST:
        cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS = 1, 1
    x = loader(cfg, path)
    return x if x.ndim == len(cfg.MVIT.PATCH_KERNEL) + 2 else x.unsqueeze(0)


def denormalize(x: torch.Tensor, cfg: CfgNode) -> np.ndarray:
    """(C, [T,] H, W) normalised input -> ([T,] H, W, 3) float RGB in [0, 1] for display."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    mean, std = torch.tensor(cfg.DATA.MEAN).view(shape), torch.tensor(cfg.DATA.STD).view(shape)
    rgb = (x * std + mean).clamp(0, 1)
    return rgb.movedim(0, -1).numpy()


def draw(path: str, rgb: np.ndarray, maps: dict, title: str, max_frames: int = 8) -> None:
    """The input and each map over it (a clip: up to ``max_frames`` frames per row) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clip = rgb.ndim == 4
    frames = np.linspace(0, rgb.shape[0] - 1, min(max_frames, rgb.shape[0])).round().astype(int) if clip else [None]
    rows = [("input", None)] + list(maps.items())
    cols = len(frames)
    if clip:
        fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.7 * len(rows)), squeeze=False)
    else:
        fig, axes = plt.subplots(1, len(rows), figsize=(2.4 * len(rows), 2.7), squeeze=False)
    for r, (name, heat) in enumerate(rows):
        for c, t in enumerate(frames):
            ax = axes[r, c] if clip else axes[0, r]
            image = rgb[t] if clip else rgb
            ax.imshow(image, interpolation="nearest")
            if heat is not None:
                ax.imshow(heat[t] if clip else heat, cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if clip and r == 0:
                ax.set_title(f"frame {t}", fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=9) if clip else ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def explain_file(
    model: MViT,
    cfg: CfgNode,
    names: list,
    path: str,
    out: str,
    methods: Sequence[str],
    stage: int,
    target: Optional[int],
    topk: int,
) -> str:
    """Write the PNG and npz of one file; return the top-k lines."""
    x = load_input(cfg, path)
    raw: dict[str, np.ndarray] = {}
    heat: dict[str, np.ndarray] = {}
    logits = None
    if "gradcam" in methods:
        cam = grad_cam(model, x, target, stage)
        logits, target_idx = cam.logits, int(cam.target[0])
        raw.update(gradcam=cam.heatmap[0].numpy(), gradcam_grid=cam.grid_map[0].numpy())
        heat[f"Grad-CAM ({names[target_idx]})"] = raw["gradcam"]
    if "rollout" in methods:
        roll = attention_rollout(model, x)
        logits = roll.logits
        raw.update(rollout=roll.heatmap[0].numpy(), rollout_grid=roll.grid_map[0].numpy())
        raw["rollout_cls_share"] = roll.cls_share[0].numpy()
        heat["attention rollout"] = raw["rollout"]
    probs = logits[0].float().softmax(dim=-1)
    top = probs.topk(min(topk, probs.numel()))
    lines = [
        f"  {rank}. {100 * p:6.2f}%  {names[i]} ({i})"
        for rank, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1)
    ]
    stem = os.path.join(out, os.path.splitext(os.path.basename(path))[0])
    np.savez(stem + ".npz", probs=probs.numpy(), topk=top.indices.numpy(), class_names=np.array(names), **raw)
    title = ", ".join(f"{names[i]} {100 * p:.1f}%" for p, i in zip(top.values.tolist()[:3], top.indices.tolist()[:3]))
    draw(stem + ".png", denormalize(x[0], cfg), heat, f"{os.path.basename(path)}: {title}")
    return "\n".join([path, *lines, f"  -> {stem}.png, {stem}.npz"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="images (or videos, for video models)")
    parser.add_argument("--out", default="explain_out", help="output folder (default: %(default)s)")
    parser.add_argument("--method", nargs="+", choices=METHODS, default=list(METHODS), help="maps to compute")
    parser.add_argument("--stage", type=int, default=-1, help="Grad-CAM stage (default: the last, %(default)s)")
    parser.add_argument("--target", type=int, help="class Grad-CAM explains (default: the top class)")
    parser.add_argument("--topk", type=int, default=5, help="classes to print per file (default: %(default)s)")
    add_model_args(parser)
    args = parser.parse_args(argv)
    for path in args.files:  # fail before the (slow) model set-up
        if not os.path.isfile(path):
            raise UserError(f"{path}: file not found")
    cfg, model, names = load_model(args)
    if not -len(model.stage_ends) <= args.stage < len(model.stage_ends):
        raise UserError(f"--stage {args.stage}: the model has {len(model.stage_ends)} stages")
    if args.target is not None and not 0 <= args.target < len(names):
        raise UserError(f"--target {args.target}: the model has {len(names)} classes")
    os.makedirs(args.out, exist_ok=True)
    for path in args.files:
        print(explain_file(model, cfg, names, path, args.out, args.method, args.stage, args.target, args.topk))
    return 0


if __name__ == "__main__":
    run_cli(main)
