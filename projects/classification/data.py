"""ImageNet-style image folders (``train/<class>/*``, ``val/<class>/*``) with timm's transforms.

Any class names and any image format Pillow reads. What each kind of bad or unusual file does:

- loads right (:func:`load_image`): grayscale, palette, CMYK, RGBA / LA (alpha dropped, as timm's loader does),
  16-bit grayscale (scaled to 8 bits, not clipped), any size down to 1x1, photos with an EXIF orientation
  (turned upright);
- named in the log and left out: files whose suffix Pillow does not know (listed when the folder is read);
- named in the log and replaced by the next readable image, so one bad file never stops a run: a file that
  fails to decode (truncated JPEG, a text or empty file with an image suffix); 50 in a row stop the run;
- stops at once with a one-line :class:`~mvit.errors.DataError` naming the folder: a missing or empty split
  folder, a class folder without images, a class of ``train/`` missing from ``val/``, a ``val/`` class that
  ``train/`` lacks.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from fvcore.common.config import CfgNode
from PIL import Image, ImageOps
from timm.data import create_transform
from timm.data.auto_augment import RandAugment
from torch.utils.data import Dataset

from mvit.data.augment import accelerate, augmentation_keys
from mvit.errors import ConfigError, DataError

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
    The slow steps run through :func:`mvit.data.augment.accelerate`: the same bytes under the
    same random state, about 1.4x the items per second (``tools/benchmark.py --loader``).

    Returns:
        PIL image -> float tensor (3, S, S).
    """
    with augmentation_keys(cfg):
        return accelerate(_timm_transform(cfg, is_training))


def _timm_transform(cfg: CfgNode, is_training: bool) -> Callable[[Image.Image], torch.Tensor]:
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


# Integer modes Pillow reads 16-bit grayscale files as; its own convert("RGB") would clip them at 255.
_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_image(path: str) -> Image.Image:
    """The image at ``path`` as an upright 8-bit RGB PIL image.

    The EXIF orientation is applied; 16-bit grayscale is scaled to 8 bits; grayscale, palette, CMYK and alpha
    images are converted by Pillow (alpha dropped).

    Raises:
        DataError: the file is missing or Pillow cannot decode it (the message names it).
    """
    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            image.load()
        ImageOps.exif_transpose(image, in_place=True)
        if image.mode in _WIDE_GRAY_MODES:
            wide = np.asarray(image, dtype=np.float64)
            image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
        return image if image.mode == "RGB" else image.convert("RGB")  # no copy of an RGB image
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for bad files (OSError, SyntaxError, ...)
        raise DataError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None


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
            raise DataError(f"{class_root}: class folder has no images")
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
            raise DataError(
                f"{root}: folder not found (expected <DATA.PATH_TO_DATA_DIR>/{{train,val}}/<class>/<image>)"
            )
        found = _class_dirs(root)
        if not found:
            raise DataError(f"{root}: no class folders (expected {root}/<class>/<image>)")
        self.classes = list(classes) if classes is not None else found
        missing = [c for c in self.classes if c not in found]
        if missing:
            raise DataError(
                f"{root}: no folder for class {missing[0]!r}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + " that train/ has"
            )
        extra = [c for c in found if c not in self.classes]
        if extra:
            raise DataError(f"{root}: class folder {extra[0]!r} is not a class of train/")
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
            except DataError as err:
                logger.warning("cannot read image, using the next one: %s", err)
                continue
            return image, label
        raise DataError(
            f"{self.root}: {_MAX_REPLACEMENTS} images in a row could not be read (from {self.samples[index][0]}); "
            "the warnings in the log name each file"
        )

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
        raise ConfigError("DATA.PATH_TO_DATA_DIR is not set (an ImageNet-style folder with train/ and val/)")
    if not os.path.isdir(root):
        raise DataError(f"DATA.PATH_TO_DATA_DIR: folder not found: {root}")
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
    """Prediction input loader for images: the test transform of one file -> (3, S, S).

    Raises:
        DataError: not a readable image (the message names the file).
    """
    return build_transform(cfg, is_training=False)(load_image(path))
