"""Test-time transforms of released weights (torchvision's ``weights.transforms()``): what
:meth:`mvit.models.weights.Weights.transforms` returns.

- :class:`ImageEval`: a PIL image or a uint8 tensor (C, H, W) -> float (3, crop, crop): resize the short side to
  ``resize_size`` (the stated interpolation), center crop ``crop_size``, scale to [0, 1], normalise. On a PIL
  image it gives the same bytes as the classification project's test pipeline (timm's eval transform); a tensor
  is resized by torch (antialiased): close to Pillow, not byte-equal.
- :class:`ClipEval`: a clip of already sampled frames, uint8 (T, H, W, C) (as video decoders give) or
  (T, C, H, W), RGB -> float (C, T, crop, crop): short side to ``resize_size`` (long side floored), the center
  crop (offsets rounded up), scaled, normalised, channels reversed first for weights trained on BGR frames:
  the video project's test view (PySlowFast's ``uniform_crop`` center), byte for byte.

torchvision is imported when a transform is built, not when :mod:`mvit.models` is.
"""

from __future__ import annotations

import math
from typing import Any, Sequence, Tuple

import torch

__all__ = ["ClipEval", "ImageEval"]


def _interpolation(name: str):
    from torchvision.transforms.v2 import InterpolationMode

    return InterpolationMode(name.lower())


def _scale_and_normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 -> float in [0, 1], normalised over dim -3. ``div(255)`` as ``ToTensor`` does: v2's ``to_dtype``
    multiplies by 1/255, which differs in the last bit."""
    from torchvision.transforms.v2 import functional as F

    return F.normalize(image.float().div(255), list(mean), list(std))


class ImageEval:
    """Resize the short side, center crop, to float, normalise (see the module docstring)."""

    def __init__(
        self,
        crop_size: int,
        resize_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bicubic",
    ) -> None:
        self.crop_size, self.resize_size = int(crop_size), int(resize_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.interpolation = interpolation

    def __call__(self, image: Any) -> torch.Tensor:
        """PIL image (any mode, converted to RGB) or uint8 tensor (C, H, W) -> float (C, crop, crop)."""
        from torchvision.transforms.v2 import functional as F

        if isinstance(image, torch.Tensor):
            if image.dtype != torch.uint8:
                raise TypeError(f"expected a uint8 image tensor (C, H, W), got {image.dtype}")
        elif getattr(image, "mode", "RGB") != "RGB":
            image = image.convert("RGB")
        image = F.resize(image, [self.resize_size], interpolation=_interpolation(self.interpolation), antialias=True)
        image = F.center_crop(image, [self.crop_size])
        if not isinstance(image, torch.Tensor):
            image = F.pil_to_tensor(image)
        return _scale_and_normalize(image, self.mean, self.std)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(resize_size={self.resize_size}, crop_size={self.crop_size}, "
            f"interpolation={self.interpolation!r}, mean={self.mean}, std={self.std})"
        )


def _short_side_size(height: int, width: int, size: int) -> Tuple[int, int]:
    """(new_height, new_width) with the short side ``size``, the long side floored (PySlowFast)."""
    if min(height, width) == size:
        return height, width
    if width < height:
        return int(math.floor(height / width * size)), size
    return size, int(math.floor(width / height * size))


class ClipEval:
    """Frames already sampled -> one normalised center view (see the module docstring)."""

    def __init__(
        self,
        crop_size: int,
        resize_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bilinear",
        num_frames: int = 16,
        sampling_rate: int = 4,
        channel_order: str = "RGB",
    ) -> None:
        self.crop_size, self.resize_size = int(crop_size), int(resize_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.interpolation = interpolation
        self.num_frames, self.sampling_rate = num_frames, sampling_rate  # what the clip should hold; not sampled here
        self.channel_order = channel_order

    def __call__(self, clip: Any) -> torch.Tensor:
        """uint8 (T, H, W, C) or (T, C, H, W) RGB frames -> float (C, T, crop, crop)."""
        from torchvision.transforms.v2 import functional as F

        clip = torch.as_tensor(clip)
        if clip.ndim != 4 or clip.dtype != torch.uint8 or 3 not in (clip.shape[1], clip.shape[-1]):
            raise TypeError(f"expected a uint8 clip (T, H, W, 3) or (T, 3, H, W), got {clip.dtype} {tuple(clip.shape)}")
        if clip.shape[1] != 3:  # (T, H, W, C), as PyAV / torchvision.io decode
            clip = clip.permute(0, 3, 1, 2)
        if self.channel_order == "BGR":
            clip = clip.flip(1)
        height, width = clip.shape[-2:]
        new_h, new_w = _short_side_size(height, width, self.resize_size)
        if (new_h, new_w) != (height, width):
            clip = F.resize(clip, [new_h, new_w], interpolation=_interpolation(self.interpolation), antialias=True)
        y, x = math.ceil((new_h - self.crop_size) / 2), math.ceil((new_w - self.crop_size) / 2)
        clip = clip[..., y : y + self.crop_size, x : x + self.crop_size]
        return _scale_and_normalize(clip, self.mean, self.std).permute(1, 0, 2, 3).contiguous()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_frames={self.num_frames}, sampling_rate={self.sampling_rate}, "
            f"resize_size={self.resize_size}, crop_size={self.crop_size}, interpolation={self.interpolation!r}, "
            f"mean={self.mean}, std={self.std}, channel_order={self.channel_order!r})"
        )
