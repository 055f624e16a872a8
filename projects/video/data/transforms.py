"""Clip transforms: one random draw per clip, applied to every frame.

Choice: ``torchvision.transforms.v2`` on clips, not a shim for ``pytorchvideo.transforms``. pytorchvideo
0.1.5's transforms import ``torchvision.transforms.functional_tensor``, removed in torchvision 0.17; a shim
would have to plant a fake module in ``sys.modules`` for the whole process, to reach video ops that v2
already has: its kernels take a ``tv_tensors.Video`` of shape (T, C, H, W) and apply one sampled crop or flip
to all frames. RandAugment and random erasing come from timm, made clip-consistent here (see below).

Order and arithmetic follow PySlowFast's Kinetics loader (MViTv2 recipe): short-side jitter, RandAugment,
random resized crop, horizontal flip, normalisation, random erasing of one box through all frames.
"""

from __future__ import annotations

import random
from typing import Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import str_to_pil_interp
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from mvit.data.augment import accelerate

from .sampling import short_side_size, uniform_crop_offsets

__all__ = ["ClipRandAugment", "ClipRandomErasing", "VideoEvalTransform", "VideoTrainTransform"]


def _resize_short_side(clip: torch.Tensor, size: int) -> torch.Tensor:
    """(T, C, H, W) -> (T, C, H', W') with the short side ``size`` (bilinear, antialiased)."""
    height, width = clip.shape[-2:]
    new_size = short_side_size(height, width, size)
    if new_size == (height, width):
        return clip
    return TF.resize(clip, list(new_size), interpolation=v2.InterpolationMode.BILINEAR, antialias=True)


def _normalize(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (T, C, H, W) -> float (C, T, H, W), scaled to [0, 1] then normalised per channel."""
    clip = clip.float().div_(255.0)
    clip = TF.normalize(clip, list(mean), list(std))
    return clip.permute(1, 0, 2, 3).contiguous()


class ClipRandAugment:
    """timm's RandAugment with the same ops and magnitudes on every frame of a clip.

    timm draws the ops with ``np.random`` and the probabilities / magnitudes with ``random``; restoring both
    generators' states before each frame replays one draw for all frames (PySlowFast applies its RandAugment
    copy to the list of frames for the same reason: an op that differs per frame is fake motion).

    Args:
        config_str: timm RandAugment string, e.g. ``"rand-m7-n4-mstd0.5-inc1"``.
        mean: fill colour of geometric ops, as fractions of 255.
        interpolation: ``"bicubic"``, ``"bilinear"``, ...
    """

    def __init__(self, config_str: str, mean: Sequence[float], interpolation: str = "bicubic") -> None:
        self.hparams = hparams = {
            "img_mean": tuple(round(255 * m) for m in mean),
            "interpolation": str_to_pil_interp(interpolation),
            # timm turns magnitude 10 of PosterizeIncreasing into 0 bits, which Pillow >= 11 rejects
            # (ValueError); magnitudes drawn with mstd reach 10, so cap them just below.
            "magnitude_max": 9.99,
        }
        self.transform = accelerate(rand_augment_transform(config_str, hparams))  # same bytes, faster

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 (T, C, H, W) -> uint8 (T, C, H, W)."""
        py_state, np_state = random.getstate(), np.random.get_state()
        frames = []
        for frame in clip:
            random.setstate(py_state)
            np.random.set_state(np_state)
            image = self.transform(Image.fromarray(frame.permute(1, 2, 0).numpy()))
            frames.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
        return torch.stack(frames)


class ClipRandomErasing:
    """timm's RandomErasing with one box through all frames (PySlowFast's ``cube`` erasing).

    The clip is seen as one image of C * T channels, so timm draws one box and fills it with fresh noise in
    every frame (``mode="pixel"``).
    """

    def __init__(self, probability: float, mode: str = "pixel", max_count: int = 1) -> None:
        self.erase = RandomErasing(probability, mode=mode, max_count=max_count, device="cpu")

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """float (C, T, H, W) -> the same tensor, erased in place."""
        channels, frames, height, width = clip.shape
        self.erase(clip.view(channels * frames, height, width))
        return clip


class VideoTrainTransform:
    """Training augmentation of one decoded clip.

    Args:
        crop_size: output height and width.
        jitter_scales: ``(min, max)`` short side before cropping, drawn uniformly (PySlowFast
            ``TRAIN_JITTER_SCALES``).
        crop_scale: area fraction range of the random resized crop; empty = square random crop of the
            jittered frames (PySlowFast without ``TRAIN_JITTER_SCALES_RELATIVE``).
        crop_ratio: aspect range of the random resized crop.
        flip: random horizontal flip (off for data whose labels depend on left and right).
        rand_augment: timm RandAugment string, "" for none.
        erase_prob / erase_mode / erase_count: random erasing (probability 0 disables it).
        inverse_uniform: draw the jitter size as 1 / U(1 / max, 1 / min).
    """

    def __init__(
        self,
        crop_size: int,
        jitter_scales: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        crop_scale: Sequence[float] = (0.08, 1.0),
        crop_ratio: Sequence[float] = (0.75, 1.3333),
        flip: bool = True,
        rand_augment: str = "",
        interpolation: str = "bicubic",
        erase_prob: float = 0.0,
        erase_mode: str = "pixel",
        erase_count: int = 1,
        inverse_uniform: bool = False,
    ) -> None:
        self.jitter_scales = tuple(int(s) for s in jitter_scales)
        self.inverse_uniform = inverse_uniform
        self.mean, self.std = tuple(mean), tuple(std)
        if crop_scale:
            crop = v2.RandomResizedCrop(crop_size, scale=tuple(crop_scale), ratio=tuple(crop_ratio), antialias=True)
        else:
            crop = v2.RandomCrop(crop_size, pad_if_needed=True)
        self.spatial = v2.Compose([crop, v2.RandomHorizontalFlip()] if flip else [crop])
        self.rand_augment = ClipRandAugment(rand_augment, mean, interpolation) if rand_augment else None
        self.erase = ClipRandomErasing(erase_prob, erase_mode, erase_count) if erase_prob > 0 else None

    def _jitter_size(self) -> int:
        low, high = self.jitter_scales
        if self.inverse_uniform:
            return int(round(1.0 / random.uniform(1.0 / high, 1.0 / low)))
        return int(round(random.uniform(low, high)))

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 (T, C, H, W) decoded frames -> float (C, T, crop_size, crop_size)."""
        clip = _resize_short_side(clip, self._jitter_size())
        if self.rand_augment is not None:
            clip = self.rand_augment(clip)
        clip = self.spatial(tv_tensors.Video(clip)).as_subclass(torch.Tensor)
        clip = _normalize(clip, self.mean, self.std)
        if self.erase is not None:
            clip = self.erase(clip)
        return clip


class VideoEvalTransform:
    """Deterministic test view: resize the short side, take crop ``spatial_idx`` (PySlowFast ``uniform_crop``)."""

    def __init__(self, short_side: int, crop_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        if short_side < crop_size:
            raise ValueError(f"test short side {short_side} is smaller than the test crop {crop_size}")
        self.short_side, self.crop_size = int(short_side), int(crop_size)
        self.mean, self.std = tuple(mean), tuple(std)

    def crop_box(self, height: int, width: int, spatial_idx: int) -> Tuple[int, int, int, int]:
        """``(y, x, h, w)`` of the crop in the resized frame, for an input of ``height`` x ``width``."""
        new_h, new_w = short_side_size(height, width, self.short_side)
        y, x = uniform_crop_offsets(new_h, new_w, self.crop_size, spatial_idx)
        return y, x, self.crop_size, self.crop_size

    def __call__(self, clip: torch.Tensor, spatial_idx: int = 1) -> torch.Tensor:
        """uint8 (T, C, H, W) -> float (C, T, crop_size, crop_size)."""
        y, x, h, w = self.crop_box(*clip.shape[-2:], spatial_idx)
        clip = _resize_short_side(clip, self.short_side)[..., y : y + h, x : x + w]
        return _normalize(clip, self.mean, self.std)
