#!/usr/bin/env python
"""Print the top-5 classes of images (or videos) under a trained MViTv2.

    python tools/predict.py --cfg configs/DEMO/MVITv2_digits.yaml --checkpoint output/digits/checkpoints/best.pyth \
        data/digits/val/3/0045.png [MORE FILES ...] [--opts KEY VALUE ...]

    python tools/predict.py --cfg configs/IN1K/MVITv2_T.yaml --pretrained photo.jpg   # mvitv2_t.fb_in1k
    python tools/predict.py --model mvitv2_s_16x4.fb_k400 clip.mp4      # no yaml: the zoo model and its release

    # detection (a LazyConfig .py): COCO-style json and drawn pictures in --output
    python tools/predict.py --cfg projects/detection/configs/mask_rcnn_mvitv2_demo_synthetic.py \
        --checkpoint output/detection_demo/model_final.pth photos/ --output predictions/ --score-threshold 0.5

``--model``: a zoo name (its default release) or a weights tag; the recipe (input size, frames, views) comes from
the yaml under ``configs/`` that names the model by ``MVIT.ARCH``. ``--device auto|cpu|cuda`` (default auto: cuda
when a GPU is available). Files may come before or after ``--opts``. Two lines say where the model runs and which
weights it loaded; a release of another architecture than the config's is refused before any download.

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
import glob
import os
import re
import sys
from typing import Any, Optional, Sequence

import numpy as np
import torch
from fvcore.common.config import CfgNode

from mvit import create_model
from mvit.api import resolve_config
from mvit.checkpoint import is_training_state, load_checkpoint, read_checkpoint
from mvit.checkpoint.hub import resolve_checkpoint
from mvit.config import load_config
from mvit.config.arch import config_from_cfg
from mvit.data import find_input_loader
from mvit.errors import USER_ERROR_EXIT_CODE, CheckpointError, ConfigError, UserError, report, run_cli
from mvit.models.weights import Weights, get_weights
from mvit.models.weights import class_names as weights_class_names
from mvit.runtime.projects import load_projects
from mvit.utils.cli import ArgumentParser
from mvit.utils.devices import add_device_argument, resolve_device

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
def predict(model: torch.nn.Module, cfg: CfgNode, path: str, device: Optional[torch.device] = None) -> torch.Tensor:
    """Class probabilities (K,) of one file (averaged over its views when its loader returns several)."""
    x = find_input_loader(path)(cfg, path).to(device or "cpu")
    single_ndim = 4 if (cfg.DATA.NUM_FRAMES > 1 or len(cfg.MVIT.PATCH_KERNEL) == 3) else 3
    if x.ndim == single_ndim:
        x = x.unsqueeze(0)
    elif x.ndim != single_ndim + 1:
        raise UserError(f"{path}: the input loader returned shape {tuple(x.shape)}, not a {single_ndim}-D input")
    return model(x).float().softmax(dim=-1).mean(dim=0).cpu()


def _load_state(model: torch.nn.Module, state: dict[str, Any], path: str, cfg_file: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # torch lists every mismatched key; the first line names the problem
        raise CheckpointError(f"{path}: does not fit the model of {cfg_file}: {report(err)}") from None


# A config key of the yaml configs (``MODEL.NUM_CLASSES``): after --opts, other words are files.
_YAML_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Za-z0-9_]+)+$")


def split_opts(tokens: Sequence[str], lazy: bool) -> tuple[list[str], list[str]]:
    """``(overrides, files)`` of the words after ``--opts``: files may follow the overrides. A LazyConfig override
    is one ``key=value`` word; a yaml override is an upper-case dotted key and its value."""
    opts: list[str] = []
    files: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if lazy and "=" in token:
            opts.append(token)
        elif not lazy and _YAML_KEY.match(token):
            if i + 1 >= len(tokens):
                raise UserError(f"--opts {token}: no value follows the key")
            opts += [token, tokens[i + 1]]
            i += 1
        else:
            files.append(token)
        i += 1
    return opts, files


def _is_video_cfg(cfg: CfgNode) -> bool:
    return cfg.DATA.NUM_FRAMES > 1 or len(cfg.MVIT.PATCH_KERNEL) == 3


def check_file_kinds(files: Sequence[str], video_model: bool, model_name: str) -> None:
    """An image for a video model (or a video for an image model) is one line, before the model is built."""
    from projects.classification.data import IMAGE_SUFFIXES
    from projects.video import VIDEO_SUFFIXES

    for path in files:
        suffix = os.path.splitext(path)[1].lower()
        if video_model and suffix in IMAGE_SUFFIXES and suffix not in VIDEO_SUFFIXES:
            raise UserError(
                f"{path}: an image, but {model_name} is a video model (it takes clips: {', '.join(VIDEO_SUFFIXES)})"
            )
        if not video_model and suffix in VIDEO_SUFFIXES:
            raise UserError(f"{path}: a video, but {model_name} is an image model (it takes images: .jpg, .png, ...)")


def zoo_config_file(weights: Weights) -> str:
    """The yaml under ``configs/`` whose ``MVIT.ARCH`` is the release's model, in the folder of its data set."""
    folder = {"kinetics-400": "K400", "ssv2": "SSv2"}.get(weights.class_set, "IN1K")
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    for folder_name in (folder, "IN1K", "K400", "SSv2"):
        for path in sorted(glob.glob(os.path.join(root, folder_name, "*.yaml"))):
            with open(path) as f:
                if re.search(rf"^\s*ARCH:\s*{re.escape(weights.arch)}\s*$", f.read(), re.M):
                    return path
    raise ConfigError(f"--model {weights.tag}: no config under {root} names MVIT.ARCH {weights.arch}; use --cfg")


# MViTConfig fields that decide whether a release's tensors fit a model, and how to say them in words.
_ARCH_FIELDS = {
    "depth": "depth",
    "embed_dim": "embed_dim",
    "num_heads": "heads",
    "patch_kernel": "patch kernel",
    "cls_embed_on": "class token",
    "num_classes": "classes",
}


def check_release_fits(tag: str, cfg: CfgNode, cfg_file: str) -> None:
    """Refuse, before any download, a release of another architecture than the config's model."""
    weights = get_weights(tag)
    if weights.detector:
        raise ConfigError(
            f"zoo:{tag} is a detectron2 detector; predict with --cfg projects/detection/configs/{weights.detector}.py"
        )
    if cfg.MVIT.ARCH and cfg.MVIT.ARCH != weights.arch:
        raise ConfigError(f"zoo:{tag} is a release of {weights.arch}, but {cfg_file} builds {cfg.MVIT.ARCH}")
    released, mine = resolve_config(tag), config_from_cfg(cfg)
    for field_name, words in _ARCH_FIELDS.items():
        theirs, ours = getattr(released, field_name), getattr(mine, field_name)
        if tuple(np.ravel(theirs)) != tuple(np.ravel(ours)):
            hint = " (--opts MODEL.NUM_CLASSES " + str(theirs) + ")" if field_name == "num_classes" else ""
            raise ConfigError(
                f"zoo:{tag} is a release of {weights.arch} ({words} {theirs}), but the model of {cfg_file} has "
                f"{words} {ours}{hint}"
            )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--cfg", "--config-file", dest="cfg_file", help="config of the model: a yaml, or a detection LazyConfig .py"
    )
    model.add_argument("--model", help="a zoo name (its default release) or a weights tag, without a config file")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="weights: a file in any format the core loads, a URL or zoo:<tag>")
    source.add_argument(
        "--pretrained",
        action="store_true",
        help="the released weights of the config's MVIT.ARCH (another release: --checkpoint zoo:<tag>)",
    )
    parser.add_argument("--topk", type=int, default=5, help="classes to print per file (default: %(default)s)")
    parser.add_argument("--ema", action="store_true", help="use the EMA weights of a training checkpoint")
    add_device_argument(parser)
    detection = parser.add_argument_group("detection (a LazyConfig .py under projects/detection/configs)")
    detection.add_argument(
        "--output", default="output/predictions", help="json and drawn pictures (default: %(default)s)"
    )
    detection.add_argument("--score-threshold", type=float, default=0.5, help="keep detections scoring at least this")
    detection.add_argument(
        "--categories-json", help="a COCO json whose categories name the classes (the training set's)"
    )
    parser.add_argument("files", nargs="*", help="images (or videos, for video models); a folder of images (detection)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides; files may follow")
    try:
        args = parser.parse_args(argv)
        lazy = bool(args.cfg_file) and args.cfg_file.endswith(".py")
        args.opts, more_files = split_opts(args.opts, lazy)
        args.files += more_files
        if not args.files:
            raise UserError("no input: give image (or video) files, before or after --opts")
        if lazy:
            if not args.checkpoint:
                raise UserError(f"{args.cfg_file}: a detector needs --checkpoint (a path, URL or zoo:<tag>)")
            from projects.detection.predict import run

            return run(
                args.cfg_file, args.opts, args.files, args.checkpoint, args.output, args.score_threshold,
                args.device, args.categories_json,
            )  # fmt: skip
        for path in args.files:  # fail before the (slow) model set-up
            if not os.path.isfile(path):
                raise UserError(f"{path}: file not found")
        if args.cfg_file and not (args.checkpoint or args.pretrained):
            raise UserError(f"{args.cfg_file}: give the weights: --checkpoint PATH|URL|zoo:<tag> or --pretrained")
        _, extensions = load_projects(PROJECTS)
        if args.model:
            if args.pretrained:
                raise UserError("--model loads its release already; --pretrained is for --cfg")
            weights = get_weights(args.model)  # a zoo name gives its default release; unknown: one line
            if weights.detector:
                raise UserError(
                    f"--model {args.model}: a detectron2 detector; predict with --cfg projects/detection/configs/{weights.detector}.py"
                )
            args.cfg_file = zoo_config_file(weights)
            args.opts = ["MODEL.NUM_CLASSES", str(weights.num_classes), *args.opts]
            if not args.checkpoint:
                args.checkpoint = f"zoo:{weights.tag}"
        cfg = load_config(args.cfg_file, args.opts, extensions=extensions)
        name = args.model or cfg.MVIT.ARCH or args.cfg_file
        check_file_kinds(args.files, _is_video_cfg(cfg), name)
        class_set = ""
        if args.pretrained:
            if not cfg.MVIT.ARCH:
                raise UserError(
                    f"{args.cfg_file}: --pretrained needs MVIT.ARCH; name a release: --checkpoint zoo:<tag>"
                )
            args.checkpoint = f"zoo:{get_weights(cfg.MVIT.ARCH).tag}"
        if args.checkpoint.startswith("zoo:"):
            tag = args.checkpoint[len("zoo:") :]
            check_release_fits(tag, cfg, args.cfg_file)  # before the download
            class_set = get_weights(tag).class_set
        device, device_line = resolve_device(args.device)
        print(device_line)
        model = create_model(cfg).eval()
        local = resolve_checkpoint(args.checkpoint)
        ckpt = read_checkpoint(local)
        if args.ema:
            ema = ckpt.get("hooks", {}).get("ema", {}).get("model")
            if ema is None:
                raise UserError(f"{args.checkpoint}: no EMA weights in this checkpoint")
            _load_state(model, ema, args.checkpoint, args.cfg_file)
            kind = "this project's training checkpoint, EMA weights"
        elif is_training_state(ckpt):  # this engine's checkpoint, already read
            _load_state(model, ckpt["model"], args.checkpoint, args.cfg_file)
            kind = "this project's training checkpoint"
        else:  # any other format: the core converts it
            kind = f"{load_checkpoint(model, local, strict=True, log=False).format} format"
        where = local if local == args.checkpoint else f"{args.checkpoint} -> {local}"
        print(f"Weights: {where} ({kind})")
        model = model.to(device)
        names = class_names(cfg, ckpt, class_set)
        for path in args.files:
            probs = predict(model, cfg, path, device)
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
