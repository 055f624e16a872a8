"""Faster stand-ins for the slow steps of timm's image transforms, with byte-identical output.

Used by the image and the video training pipelines (the video one runs RandAugment on every frame).

Profiled on 500x375 JPEGs with ``rand-m9-n6-mstd0.5-inc1`` (one thread, ``tools/benchmark.py --loader``): a training
item spends about half its time in RandAugment, mostly in the shears and translations (2-4 ms each on a 224 px image),
because Pillow's affine transform evaluates its 4x4 cubic (or 2x2 linear) filter per pixel through function
pointers, although for these ops one coordinate always lands on pixel centres and only a 1-D filter is needed, and
rotations (4 ms) for the same reason; ToTensor + Normalize make three float passes over the image. Here:

- rotate / shear / translate (:func:`affine_transform`): a small C kernel (``_affine.c``, built by ``setup.py``)
  with Pillow's own arithmetic (double precision, the same evaluation order, edge clamping, fill and truncation as
  ``libImaging/Geometry.c``) that reads only the taps a 1-D filter needs where that is exact;
- ToTensor + Normalize (:class:`ToNormalizedTensor`): one table of 256 floats per channel, made by running those two
  transforms on every byte value, then a lookup.

Random draws are made as timm makes them, so a pipeline's output equals timm's under the same seeds, byte for byte
(``tests/engine/test_augment.py`` checks every op, the image and video tests whole pipelines). Why our own code: no
library has a fast path with Pillow's kernel; torchvision's tensor ``affine`` and OpenCV's ``warpAffine`` use other
cubic kernels and fixed-point coordinates, so their images differ from timm's.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from timm.data import auto_augment
from timm.data.transforms import MaybeToTensor
from torchvision import transforms as T

from ..errors import ConfigError, report

__all__ = ["ToNormalizedTensor", "accelerate", "affine_transform", "augmentation_keys"]

_BICUBIC, _BILINEAR = Image.Resampling.BICUBIC, Image.Resampling.BILINEAR
# timm's resample when an op's kwargs give none (auto_augment._DEFAULT_INTERPOLATION, bicubic since timm 0.4).
_DEFAULT_RESAMPLE = getattr(auto_augment, "_DEFAULT_INTERPOLATION", _BICUBIC)


try:  # the C kernel (setup.py builds it; without a compiler the install goes on and Pillow does the work)
    from . import _affine
except ImportError:  # pragma: no cover - exercised where the extension was not built
    _affine = None


def _fill_bytes(fillcolor: Any) -> bytes:
    """The RGB bytes Pillow leaves in pixels that map outside the image: ``fillcolor`` as ``Image.new`` reads it, or
    black when it is None (``Image.transform`` then has the C code zero them)."""
    if fillcolor is None:
        return bytes(3)
    return Image.new("RGB", (1, 1), fillcolor).tobytes()


def affine_transform(
    img: Image.Image, matrix: Sequence[float], resample: int = _BICUBIC, fillcolor: Any = None
) -> Image.Image:
    """``img.transform(img.size, Image.AFFINE, matrix, resample=resample, fillcolor=fillcolor)``, byte for byte.

    RGB images with the bilinear or bicubic filter go through the C kernel ``_affine.c``; for shears and
    translations (matrices that keep rows, ``(a3, a4, a5) == (0, 1, 0)``, or columns, ``(a0, a1, a2) == (1, 0, 0)``)
    every sample falls on its row's (column's) pixel centres, where Pillow's 2-D filter is exactly a 1-D one. Other
    modes and filters, or a missing kernel, go through Pillow.
    """
    if _affine is None or img.mode != "RGB" or resample not in (_BICUBIC, _BILINEAR):
        return img.transform(img.size, Image.Transform.AFFINE, tuple(matrix), resample=resample, fillcolor=fillcolor)
    coefficients = tuple(float(v) for v in matrix[:6])
    width, height = img.size
    out = bytearray(_fill_bytes(fillcolor) * (width * height))
    _affine.affine_rgb(img.tobytes(), width, height, out, width, height, coefficients, int(resample))
    return Image.frombytes("RGB", (width, height), bytes(out))


def _resample(kwargs: dict) -> int:
    """timm's ``_interpolation``: a list or tuple of filters means one drawn with ``random.choice``."""
    resample = kwargs.get("resample", _DEFAULT_RESAMPLE)
    return random.choice(resample) if isinstance(resample, (list, tuple)) else resample


def _shear_x(img: Image.Image, factor: float, **kwargs: Any) -> Image.Image:
    return affine_transform(img, (1, factor, 0, 0, 1, 0), _resample(kwargs), kwargs.get("fillcolor"))


def _shear_y(img: Image.Image, factor: float, **kwargs: Any) -> Image.Image:
    return affine_transform(img, (1, 0, 0, factor, 1, 0), _resample(kwargs), kwargs.get("fillcolor"))


def _translate_x_abs(img: Image.Image, pixels: float, **kwargs: Any) -> Image.Image:
    return affine_transform(img, (1, 0, pixels, 0, 1, 0), _resample(kwargs), kwargs.get("fillcolor"))


def _translate_y_abs(img: Image.Image, pixels: float, **kwargs: Any) -> Image.Image:
    return affine_transform(img, (1, 0, 0, 0, 1, pixels), _resample(kwargs), kwargs.get("fillcolor"))


def _translate_x_rel(img: Image.Image, pct: float, **kwargs: Any) -> Image.Image:
    return _translate_x_abs(img, pct * img.size[0], **kwargs)


def _translate_y_rel(img: Image.Image, pct: float, **kwargs: Any) -> Image.Image:
    return _translate_y_abs(img, pct * img.size[1], **kwargs)


class _RotationTarget:
    """Stands in for the image in Pillow's own ``Image.rotate``, which computes the matrix (with its rounding, in any
    Pillow version) and asks for the transform: that transform runs through :func:`affine_transform`."""

    def __init__(self, img: Image.Image) -> None:
        self.img, self.size, self.width, self.height = img, img.size, img.width, img.height

    def transform(self, size, method, data=None, resample=0, fill=1, fillcolor=None) -> Image.Image:
        if method != Image.Transform.AFFINE or tuple(size) != self.img.size:
            return self.img.transform(size, method, data, resample, fill, fillcolor)
        return affine_transform(self.img, data, resample, fillcolor)

    def copy(self) -> Image.Image:
        return self.img.copy()

    def transpose(self, method: int) -> Image.Image:
        return self.img.transpose(method)


def _rotate(img: Image.Image, degrees: float, **kwargs: Any) -> Image.Image:
    resample, fillcolor = _resample(kwargs), kwargs.get("fillcolor")
    try:
        return Image.Image.rotate(_RotationTarget(img), degrees, resample=resample, fillcolor=fillcolor)
    except AttributeError:  # a Pillow whose rotate needs more of the image: its own, same random draws
        return img.rotate(degrees, resample=resample, fillcolor=fillcolor)


# timm's op functions and their stand-ins (same arguments, same random draws); keyed by the function itself, so a
# timm release that changes an op keeps its own.
_STAND_INS: dict[Callable, Callable] = {
    getattr(auto_augment, name): fn
    for name, fn in (
        ("rotate", _rotate),
        ("shear_x", _shear_x),
        ("shear_y", _shear_y),
        ("translate_x_abs", _translate_x_abs),
        ("translate_y_abs", _translate_y_abs),
        ("translate_x_rel", _translate_x_rel),
        ("translate_y_rel", _translate_y_rel),
    )
    if hasattr(auto_augment, name)
}


class ToNormalizedTensor:
    """``Normalize(ToTensor(img))`` for 8-bit RGB images as a table lookup, byte-identical to the two transforms.

    The table is those two transforms applied to an image holding every byte value (in many positions, so that
    vectorised and scalar code paths agree; when they do not, this falls back to the transforms themselves).
    """

    def __init__(self, to_tensor: Callable, normalize: Callable) -> None:
        self.to_tensor, self.normalize = to_tensor, normalize
        probe = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (37, 256, 3))
        values = normalize(to_tensor(Image.fromarray(np.ascontiguousarray(probe), "RGB"))).numpy()  # (3, 37, 256)
        self.table: Optional[np.ndarray] = values[:, 0, :].copy() if (values == values[:, :1, :]).all() else None

    def __call__(self, pic: Any) -> torch.Tensor:
        if self.table is None or not isinstance(pic, Image.Image) or pic.mode != "RGB":
            return self.normalize(self.to_tensor(pic))
        pixels = np.asarray(pic)
        out = np.empty((3,) + pixels.shape[:2], np.float32)
        for c in range(3):
            np.take(self.table[c], pixels[..., c], out=out[c])
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.normalize!r})"


def accelerate(transform: Callable) -> Callable:
    """``transform`` with the stand-ins swapped in, in place, and returned: the rotations, shears and translations of
    timm's RandAugment / AutoAugment (the transform itself or steps of a torchvision ``Compose``, as timm's
    ``create_transform`` builds), and a ``Compose``'s ``MaybeToTensor`` followed by ``Normalize``. Anything else
    is left as it is; the output is the same bytes under the same random state."""
    steps = getattr(transform, "transforms", None)
    for step in steps if steps is not None else [transform]:
        policies = getattr(step, "policy", None) or []  # AutoAugment: sub-policies of ops
        for op in list(getattr(step, "ops", None) or []) + [op for sub in policies for op in sub]:
            fn = getattr(op, "aug_fn", None)
            if fn in _STAND_INS:
                op.aug_fn = _STAND_INS[fn]
    for i in range(len(steps or ()) - 1):
        if type(steps[i]) in (MaybeToTensor, T.ToTensor) and type(steps[i + 1]) is T.Normalize:
            steps[i : i + 2] = [ToNormalizedTensor(steps[i], steps[i + 1])]
            break
    return transform


@contextlib.contextmanager
def augmentation_keys(cfg: Any) -> Iterator[None]:
    """Building timm's augmentation from ``cfg.AUG``: timm rejects a bad RandAugment string or filter name with an
    ``assert``, a ValueError or a KeyError; that becomes one ConfigError naming the keys."""
    try:
        yield
    except (AssertionError, ValueError, KeyError) as err:
        raise ConfigError(
            f"AUG.AA_TYPE={cfg.AUG.AA_TYPE!r}, AUG.INTERPOLATION={cfg.AUG.INTERPOLATION!r}: timm cannot build this "
            f"augmentation ({report(err)})"
        ) from None
