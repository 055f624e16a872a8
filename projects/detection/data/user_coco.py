"""A user's own COCO-format data set on ``train_net.py``'s command line, without code.

    python projects/detection/train_net.py --config-file projects/detection/configs/mask_rcnn_mvitv2_t_3x.py \\
        --train-json data/mine/train.json --train-images data/mine/train \\
        --val-json data/mine/val.json --val-images data/mine/val --dataset-name mine  train.max_iter=2000 ...

registers ``{name}_train`` / ``{name}_val`` with detectron2's ``register_coco_instances`` (what a detectron2 user
would write in code), points ``dataloader.train`` / ``dataloader.test`` / ``dataloader.evaluator`` at them and sets
``model.roi_heads.num_classes`` to the number of categories in the json (the box predictors and the mask head of
the configs follow it through ``${..num_classes}``), unless ``model.roi_heads.num_classes=`` is given as an override.
The json files go through ``coco_checks`` as every COCO set does (bad input: one line naming file and entry).
Without ``--val-json`` nothing is evaluated (the config's test set has other categories). Flags go before the
``key=value`` overrides (detectron2's command line gives the overrides the rest of the line).
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List, Optional, Tuple

from mvit.errors import ConfigError

from .coco_checks import _check_categories, _read_json, check_same_categories, checked_detection_dataset_dicts

__all__ = ["add_user_coco_arguments", "apply_user_coco", "read_categories"]

_registered: Dict[str, Tuple[str, str]] = {}  # names this module registered -> (json_file, image_root)


def add_user_coco_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--train-json / --train-images / --val-json / --val-images / --dataset-name`` flags."""
    group = parser.add_argument_group("own COCO-format data (instead of the config's data sets)")
    group.add_argument("--train-json", metavar="PATH", help="COCO instances json of the training set")
    group.add_argument("--train-images", metavar="DIR", help="folder the training json's file_name entries are in")
    group.add_argument("--val-json", metavar="PATH", help="COCO instances json of the validation set (evaluated)")
    group.add_argument("--val-images", metavar="DIR", help="folder the validation json's file_name entries are in")
    group.add_argument(
        "--dataset-name",
        default="user_coco",
        metavar="NAME",
        help="registered as NAME_train / NAME_val in detectron2's DatasetCatalog (default: %(default)s)",
    )


def read_categories(json_file: str, flag: str = "") -> List[Tuple[int, str]]:
    """``(id, name)`` of a COCO json's categories, sorted by id (detectron2's contiguous class order).

    Raises:
        DataError: the file is missing, not JSON, or its categories are malformed (one line naming the file).
    """
    return _check_categories(json_file, _read_json(json_file, flag or json_file).get("categories") or [])


def _split(args: argparse.Namespace, split: str) -> Optional[Tuple[str, str]]:
    json_file, image_root = getattr(args, f"{split}_json", None), getattr(args, f"{split}_images", None)
    if json_file is None and image_root is None:
        return None
    if json_file is None or image_root is None:
        given, missing = (f"--{split}-json", f"--{split}-images")[:: 1 if json_file else -1]
        raise ConfigError(f"{given} needs {missing} too (the json and the folder of its images)")
    if not os.path.isfile(json_file):
        raise ConfigError(f"--{split}-json: no such file: {json_file}")
    if not os.path.isdir(image_root):
        raise ConfigError(f"--{split}-images: no such folder: {image_root}")
    return json_file, image_root


def _register(name: str, json_file: str, image_root: str) -> None:
    """``register_coco_instances`` once per process (again with other files: the name is replaced)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    files = (os.path.abspath(json_file), os.path.abspath(image_root))
    if _registered.get(name) == files:
        return
    if name in DatasetCatalog.list():
        if name not in _registered:
            raise ConfigError(f"--dataset-name: {name} is already a registered data set of detectron2; choose another")
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, *files)
    _registered[name] = files


def apply_user_coco(cfg: Any, args: argparse.Namespace, opts: Optional[List[str]] = None) -> Any:
    """Register the data sets given by the flags and point ``cfg`` (a LazyConfig) at them; ``cfg`` unchanged
    without flags. ``opts``: the key=value overrides (an explicit ``model.roi_heads.num_classes=`` is kept).

    Raises:
        ConfigError / DataError: a missing flag, file or folder, a name taken by detectron2, bad categories.
    """
    from detectron2.config import LazyCall as L

    train, val = _split(args, "train"), _split(args, "val")
    if train is None and val is None:
        return cfg
    name = args.dataset_name
    train_name, val_name = f"{name}_train", f"{name}_val"
    categories = read_categories(train[0] if train else val[0])
    if train and val:
        check_same_categories(val[0], read_categories(val[0]), categories, train[0])
    if train:
        _register(train_name, *train)
        cfg.dataloader.train.dataset = L(checked_detection_dataset_dicts)(names=train_name)
    if val:
        _register(val_name, *val)
        cfg.dataloader.test.dataset = L(checked_detection_dataset_dicts)(
            names=val_name, filter_empty=False, same_categories_as=train_name if train else None
        )
        if "evaluator" in cfg.dataloader:
            cfg.dataloader.evaluator.dataset_name = val_name
    elif "evaluator" in cfg.dataloader:
        del cfg.dataloader.evaluator  # the config's test set has other categories than this training set
    if not any(o.startswith("model.roi_heads.num_classes=") for o in opts or []) and "roi_heads" in cfg.model:
        cfg.model.roi_heads.num_classes = len(categories)
    args.user_coco_summary = (  # logged by train_net once detectron2's logger writes to log.txt
        f"Own COCO data: {', '.join(f'{n} = {s[0]} + {s[1]}' for n, s in ((train_name, train), (val_name, val)) if s)}"
        f"; {len(categories)} categories ({', '.join(n for _, n in categories)})"
        + (f"; model.roi_heads.num_classes={cfg.model.roi_heads.num_classes}" if "roi_heads" in cfg.model else "")
        + ("" if val else "; no --val-json: no evaluation")
    )
    return cfg
