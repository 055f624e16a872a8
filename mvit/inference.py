"""One-line inference: ``mvit.predict("mvitv2_t", "photo.jpg")`` -> the top-k (class name, probability) pairs.

Like mmpretrain's ``inference_model``: a weights tag or zoo name builds the model with its released weights
(:func:`mvit.create_model` ``pretrained=True``, from torch.hub's cache) and applies the weights' own test
transform (:meth:`~mvit.models.weights.Weights.transforms`). Above models and checkpoints, like :mod:`mvit.api`;
Pillow and PyAV are imported only when a file needs them.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, DataError
from .models.weights import Preprocessing, Weights, class_names, get_weights

__all__ = ["VIDEO_SUFFIXES", "clip_indices", "predict", "read_clip"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")


def predict(
    model: Union[str, nn.Module],
    inputs: Any,
    *,
    topk: int = 5,
    weights: Optional[str] = None,
    progress: bool = True,
) -> List[Tuple[str, float]]:
    """The ``topk`` classes of one image or clip, most probable first, as ``(class name, probability)``.

    Args:
        model: a weights tag (``"mvitv2_t.fb_in1k"``) or zoo name (its default weights), built with
            ``create_model(tag, pretrained=True)``; or a model object, used as it is (in eval mode for the call).
        inputs: an image file, a video file (suffix in :data:`VIDEO_SUFFIXES`, decoded with PyAV), a PIL image,
            a uint8 image tensor (C, H, W) or clip (T, H, W, C) / (T, C, H, W) (frames already sampled), or a
            float tensor already transformed ((C, H, W) or (C, T, H, W), used as it is).
        topk: how many classes (at most the model's number of classes).
        weights: for a model object, the tag whose preprocessing and class names apply. Without it an image
            model gets the ImageNet-1k test transform (resize 256 bicubic, crop 224, ImageNet mean / std) and
            ImageNet-1k names when it has 1000 outputs, otherwise class indices as names; a video model needs it.
        progress: show a progress bar if the weights are downloaded.

    A video file gives one clip: ``num_frames`` frames, one every ``sampling_rate`` (the weights' preprocessing),
    centred in the video (:func:`clip_indices`), one center crop: a single view, where the published video
    metrics average several (``preprocessing.test_views``).

    Raises:
        ConfigError: unknown tag, a video model without ``weights=``, an image given to a video model or the reverse.
        DataError: a file that is missing or cannot be decoded (names it).
        CheckpointError: the weights cannot be downloaded or loaded.
    """
    if isinstance(model, (str, os.PathLike)):
        from .api import create_model

        release = get_weights(os.fspath(model))
        model = create_model(release.tag, pretrained=True, progress=progress)
    else:
        release = get_weights(weights) if weights is not None else None
    is_video = len(getattr(getattr(model, "config", None), "input_size", ())) == 3 or (
        release is not None and release.is_video
    )
    if release is None and is_video:
        raise ConfigError("predict: a video model object needs weights=<tag> for its frames and preprocessing")
    transform = release.transforms() if release is not None else _IMAGENET_DEFAULT.transforms()
    batch = _prepare(inputs, transform, release.preprocessing if release else Preprocessing(), is_video)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            probs = model(batch.unsqueeze(0).to(device)).float().softmax(-1)[0].cpu()
    finally:
        model.train(was_training)
    names = release.class_names if release is not None else (class_names("imagenet-1k") if len(probs) == 1000 else None)
    values, indices = probs.topk(min(topk, len(probs)))
    return [(names[i] if names else str(i), float(p)) for p, i in zip(values.tolist(), indices.tolist())]


# The default preprocessing of a model object given without weights=: ImageNet-1k's.
_IMAGENET_DEFAULT = Weights("imagenet-default", "", "", "", "imagenet-1k", "imagenet-1k", 1000)


def _prepare(inputs: Any, transform, preprocessing: Preprocessing, is_video: bool) -> torch.Tensor:
    """The model input of one image or clip (no batch dimension)."""
    kind = "a video model" if is_video else "an image model"
    if isinstance(inputs, (str, os.PathLike)):
        path = os.fspath(inputs)
        if not os.path.isfile(path):
            raise DataError(f"predict: no such file: {path}")
        file_is_video = path.lower().endswith(VIDEO_SUFFIXES)
        if file_is_video != is_video:
            what = "a video" if file_is_video else "an image"
            raise ConfigError(f"predict: {path} is {what}, but the model is {kind}")
        if file_is_video:
            return transform(read_clip(path, preprocessing.num_frames, preprocessing.sampling_rate))
        return transform(_read_image(path))
    if isinstance(inputs, torch.Tensor):
        if inputs.is_floating_point():  # already transformed
            if inputs.ndim != (4 if is_video else 3):
                raise ConfigError(
                    f"predict: a transformed input for {kind} is {4 if is_video else 3}-D, got {inputs.ndim}-D"
                )
            return inputs
        if (inputs.ndim == 4) != is_video:
            raise ConfigError(f"predict: a {inputs.ndim}-D uint8 tensor given to {kind} (image: C, H, W; clip: T, ...)")
        return transform(inputs)
    if is_video:
        raise ConfigError(f"predict: a {type(inputs).__name__} given to a video model (a clip tensor or video file)")
    return transform(inputs)  # a PIL image


def _read_image(path: str):
    """An upright RGB PIL image (EXIF orientation applied, as the classification project reads images)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for bad files
        raise DataError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None
    return image if image.mode == "RGB" else image.convert("RGB")


def clip_indices(num_video_frames: int, num_frames: int, sampling_rate: int) -> List[int]:
    """Frame indices of the test clip: ``num_frames`` frames ``sampling_rate`` apart, the span centred in the video
    (start ``(n - span) // 2``); a video shorter than the span repeats its last frame."""
    if num_video_frames <= 0:
        raise ValueError("a video without frames")
    span = (num_frames - 1) * max(sampling_rate, 1) + 1
    start = max(0, (num_video_frames - span) // 2)
    return [min(start + i * max(sampling_rate, 1), num_video_frames - 1) for i in range(num_frames)]


def read_clip(path: str, num_frames: int, sampling_rate: int) -> torch.Tensor:
    """The test clip of a video file (:func:`clip_indices` over its frames): uint8 (T, H, W, 3) RGB.

    Only the clip's frames are kept (the count comes from the container, or from its packets where the
    container does not state it); where fewer frames decode than counted, the last decoded one repeats.

    Raises:
        ConfigError: PyAV is not installed (one line: how to install it).
        DataError: the file cannot be decoded or holds no video frames (names it).
    """
    try:
        import av
    except ImportError:
        raise ConfigError(f"reading {path} needs PyAV: pip install av (or mvit's video extra)") from None
    try:
        with av.open(path) as container:
            count = container.streams.video[0].frames or sum(1 for p in container.demux(video=0) if p.size)
    except (av.error.FFmpegError, IndexError, OSError) as err:
        raise DataError(f"{path}: not a readable video ({type(err).__name__}: {err})") from None
    if not count:
        raise DataError(f"{path}: no video frames")
    wanted = clip_indices(count, num_frames, sampling_rate)
    kept: dict = {}
    try:
        with av.open(path) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index in wanted:
                    kept[index] = frame.to_ndarray(format="rgb24")
                if index >= wanted[-1]:
                    break
    except (av.error.FFmpegError, OSError) as err:
        raise DataError(f"{path}: not a readable video ({type(err).__name__}: {err})") from None
    if not kept:
        raise DataError(f"{path}: no video frames decoded")
    frames = [kept.get(i, kept[max(kept)]) for i in wanted]  # frames counted but not decoded: the last one
    return torch.from_numpy(np.stack(frames))
