"""ImageNet-style image folders (``train/<class>/*``, ``val/<class>/*``) with timm's transforms.

Any class names and any image format Pillow reads. Files whose suffix Pillow does not know are listed in the
log and left out; an image that fails to decode is named in the log and replaced by the next readable one,
so one bad file never stops a run. A missing or empty folder and a class missing from ``val/`` are one-line
errors (:class:`~mvit.errors.UserError`).
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Optional, Sequence

import torch
from fvcore.common.config import CfgNode
from PIL import Image
from timm.data import create_transform
from timm.data.auto_augment import RandAugment
from torch.utils.data import Dataset

from mvit.errors import UserError

__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "build_imagenet", "build_transform", "load_image"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = tuple(sorted(ext.lower() for ext in Image.registered_extensions()))
_MAX_REPLACEMENTS = 50


def build_transform(cfg: CfgNode, is_training: bool) -> Callable[[Image.Image], torch.Tensor]:
    """timm's ImageNet transforms from the config.

    Training: RandomResizedCrop(``DATA.TRAIN_CROP_SIZE``, ``AUG.SCALE``, ``AUG.RATIO``, ``AUG.INTERPOLATION``),
    flip (``AUG.HFLIP``), RandAugment (``AUG.AA_TYPE``; color jitter when it is empty), normalize, random erasing
    (``AUG.RE_*``); with ``AUG.ENABLE`` False only resize, center crop and normalize.
    Test: resize to ``DATA.TEST_CROP_SIZE / DATA.VAL_CROP_RATIO`` (256 for 224), center crop, normalize.

    Returns:
        PIL image -> float tensor (3, S, S).
    """
    mean, std = tuple(cfg.DATA.MEAN), tuple(cfg.DATA.STD)
    interpolation = cfg.AUG.INTERPOLATION
    if not is_training:
        return create_transform(
            cfg.DATA.TEST_CROP_SIZE,
            is_training=False,
            interpolation=interpolation,
            mean=mean,
            std=std,
            crop_pct=cfg.DATA.VAL_CROP_RATIO,
        )
    if not cfg.AUG.ENABLE:
        return create_transform(
            cfg.DATA.TRAIN_CROP_SIZE, is_training=True, no_aug=True, interpolation=interpolation, mean=mean, std=std
        )
    transform = create_transform(
        cfg.DATA.TRAIN_CROP_SIZE,
        is_training=True,
        scale=tuple(cfg.AUG.SCALE),
        ratio=tuple(cfg.AUG.RATIO),
        hflip=cfg.AUG.HFLIP,
        color_jitter=cfg.AUG.COLOR_JITTER,
        auto_augment=cfg.AUG.AA_TYPE or None,
        interpolation=interpolation,
        mean=mean,
        std=std,
        re_prob=cfg.AUG.RE_PROB,
        re_mode=cfg.AUG.RE_MODE,
        re_count=cfg.AUG.RE_COUNT,
    )
    return cap_rand_augment_magnitude(transform)


def cap_rand_augment_magnitude(transform: Callable, limit: float = 9.99) -> Callable:
    """Keep timm's RandAugment magnitudes below 10.

    With ``mstd`` > 0 the sampled magnitude reaches the maximum 10, where PosterizeIncreasing asks Pillow for 0 bits
    and Pillow >= 12 raises (about 1 call in 300 of rand-m9-n6-mstd0.5-inc1), which would end a loader worker.
    create_transform cannot pass timm's ``magnitude_max`` hparam, so it is set on the built ops.
    """
    for t in getattr(transform, "transforms", ()):
        if isinstance(t, RandAugment):
            for op in t.ops:
                op.magnitude_max = min(op.magnitude_max or limit, limit)
    return transform


def load_image(path: str) -> Image.Image:
    """An RGB PIL image (grayscale, palette and alpha images are converted)."""
    with open(path, "rb") as f:
        image = Image.open(f)
        return image.convert("RGB")


def _class_dirs(root: str) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def _scan(root: str, classes: Sequence[str]) -> tuple[list[tuple[str, int]], list[str]]:
    samples, skipped = [], []
    for label, name in enumerate(classes):
        class_root = os.path.join(root, name)
        count = 0
        for dirpath, dirnames, filenames in os.walk(class_root, followlinks=True):
            dirnames.sort()
            for fname in sorted(filenames):
                path = os.path.join(dirpath, fname)
                if fname.startswith("."):
                    continue
                if os.path.splitext(fname)[1].lower() in IMAGE_SUFFIXES:
                    samples.append((path, label))
                    count += 1
                else:
                    skipped.append(path)
        if count == 0:
            raise UserError(f"{class_root}: class folder has no images")
    return samples, skipped


class ImageFolder(Dataset):
    """Images under ``root/<class>/**``; labels are the positions of the class names in ``classes``.

    Args:
        root: the split folder (e.g. ``.../train``).
        classes: class names (default: the sorted sub-folders of ``root``); every one must be a sub-folder.
        transform: PIL image -> tensor.
        num_views: transformed views per item (repeated augmentation; a list of tensors when > 1).

    Items are ``(image (3, S, S), label, index)``.
    """

    def __init__(
        self,
        root: str,
        classes: Optional[Sequence[str]] = None,
        transform: Optional[Callable[[Image.Image], torch.Tensor]] = None,
        num_views: int = 1,
    ) -> None:
        if not os.path.isdir(root):
            raise UserError(
                f"{root}: folder not found (expected <DATA.PATH_TO_DATA_DIR>/{{train,val}}/<class>/<image>)"
            )
        found = _class_dirs(root)
        if not found:
            raise UserError(f"{root}: no class folders (expected {root}/<class>/<image>)")
        self.classes = list(classes) if classes is not None else found
        missing = [c for c in self.classes if c not in found]
        if missing:
            raise UserError(
                f"{root}: no folder for class {missing[0]!r}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + " that train/ has"
            )
        extra = [c for c in found if c not in self.classes]
        if extra:
            raise UserError(f"{root}: class folder {extra[0]!r} is not a class of train/")
        self.root, self.transform, self.num_views = root, transform, num_views
        self.samples, skipped = _scan(root, self.classes)
        if skipped:
            logger.warning(
                "%s: skipped %d files that are not images: %s%s",
                root,
                len(skipped),
                ", ".join(skipped[:5]),
                " ..." if len(skipped) > 5 else "",
            )
        logger.info("%s: %d images in %d classes", root, len(self.samples), len(self.classes))

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, index: int) -> tuple[Image.Image, int]:
        """The image at ``index`` or, when it cannot be decoded, the next readable one (logged)."""
        for attempt in range(_MAX_REPLACEMENTS):
            i = (index + attempt) % len(self.samples)
            path, label = self.samples[i]
            try:
                image = load_image(path)
            except Exception as err:  # noqa: BLE001 - Pillow raises many types for bad files
                logger.warning("cannot read image %s (%s: %s); using the next image", path, type(err).__name__, err)
                continue
            return image, label
        raise RuntimeError(f"{self.root}: {_MAX_REPLACEMENTS} consecutive unreadable images from index {index}")

    def __getitem__(self, index: int):
        image, label = self._read(index)
        if self.transform is None:
            return image, label, index
        if self.num_views > 1:
            return [self.transform(image) for _ in range(self.num_views)], label, index
        return self.transform(image), label, index


def build_imagenet(cfg: CfgNode, split: str) -> ImageFolder:
    """Dataset builder registered as ``"imagenet"``: ``train`` reads ``train/``; ``val`` and ``test`` read ``val/``
    with the class list of ``train/`` (when present, so labels agree), else their own folders."""
    root = cfg.DATA.PATH_TO_DATA_DIR
    if not root:
        raise UserError("DATA.PATH_TO_DATA_DIR is not set (an ImageNet-style folder with train/ and val/)")
    if not os.path.isdir(root):
        raise UserError(f"DATA.PATH_TO_DATA_DIR: folder not found: {root}")
    train_dir, val_dir = os.path.join(root, cfg.DATA.TRAIN_DIR), os.path.join(root, cfg.DATA.VAL_DIR)
    is_training = split == "train"
    classes = _class_dirs(train_dir) if os.path.isdir(train_dir) and not is_training else None
    return ImageFolder(
        train_dir if is_training else val_dir,
        classes=classes or None,
        transform=build_transform(cfg, is_training),
        num_views=cfg.AUG.NUM_SAMPLE if is_training else 1,
    )


def load_for_predict(cfg: CfgNode, path: str) -> torch.Tensor:
    """Prediction input loader for images: the test transform of one file -> (3, S, S)."""
    return build_transform(cfg, is_training=False)(load_image(path))
