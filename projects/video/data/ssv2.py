"""Something-Something v2: the official label files, webm videos or PySlowFast's extracted frames.

``DATA.PATH_TO_DATA_DIR`` holds the label files of the release:

- ``something-something-v2-labels.json``: ``{"<template>": "<index>", ...}``, the class of each template (the
  template without its brackets); class ``i``'s name is the template with index ``i``;
- ``something-something-v2-train.json`` (split "train") and ``something-something-v2-validation.json``
  ("val" and "test"): lists of ``{"id": "78687", "template": "Holding [something] next to [something]", ...}``.

The frames of video ``<id>`` come from ``train.csv`` / ``val.csv`` when the data folder has that file
(PySlowFast's frame lists: a header, then ``original_vido_id video_id frame_id path labels`` rows, the frames
of a video in row order), else from ``<DATA.PATH_PREFIX or the data folder>/<id><DATA.SSV2_VIDEO_SUFFIX>``
decoded whole with PyAV (a webm header's frame count is not reliable; SSv2 clips are a few seconds long).

Sampling is PySlowFast's (``slowfast/datasets/ssv2.py``): ``NUM_FRAMES`` segments over the whole video, one
frame per segment, random in training, the segment's middle at test time. Frames enter the transforms in
OpenCV's BGR order, as PySlowFast's loader reads them, and ``DATA.REVERSE_INPUT_CHANNEL`` flips the
normalised clip (to RGB): the released MViTv2 SSv2 models set it and so see RGB frames normalised with
``DATA.MEAN`` / ``DATA.STD`` in reverse order. Items, retries and multi-view aggregation are :class:`Kinetics`'s.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from fvcore.common.config import CfgNode
from iopath.common.file_io import g_pathmgr
from PIL import Image

from mvit.errors import DataError

from ..config import add_video_config
from .decoding import VideoDecodeError, VideoReader
from .kinetics import ClipSampling, Kinetics, build_train_transform
from .sampling import view_indices
from .transforms import VideoEvalTransform

__all__ = [
    "SSv2",
    "load_ssv2_views",
    "read_frame_lists",
    "read_ssv2_classes",
    "read_ssv2_labels",
    "segment_frame_indices",
]

logger = logging.getLogger(__name__)

LABELS_FILE = "something-something-v2-labels.json"
SPLIT_FILES = {"train": "something-something-v2-train.json", "val": "something-something-v2-validation.json"}
FRAME_LIST_HEADER = "original_vido_id"


def segment_frame_indices(
    num_video_frames: int, num_segments: int, train: bool, clip_idx: int = 0, num_clips: int = 1
) -> torch.Tensor:
    """One frame per segment of ``num_segments`` equal segments of a video (PySlowFast's SSv2 rule).

    Segment ``i`` spans frames ``round(s * i) .. round(s * (i + 1))`` (both ends included, ``s = (frames - 1) /
    num_segments``, rounding half to even as numpy does). Training draws a frame uniformly in each segment
    (``random.randint``); test clip ``k`` of ``num_clips`` takes ``start + (end - start) * (2k + 1) // (2 *
    num_clips)``, which for one clip is PySlowFast's middle ``(start + end) // 2``.

    Returns:
        (num_segments,) int64 frame indices in ``[0, num_video_frames - 1]``.
    """
    if num_video_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_video_frames}")
    if not 0 <= clip_idx < num_clips:
        raise ValueError(f"clip_idx must be in [0, {num_clips}), got {clip_idx}")
    seg_size = float(num_video_frames - 1) / num_segments
    indices = []
    for i in range(num_segments):
        # Python's round on a float rounds half to even, as PySlowFast's np.round.
        start, end = int(round(seg_size * i)), int(round(seg_size * (i + 1)))
        if train:
            indices.append(random.randint(start, end))
        else:
            indices.append(start + (end - start) * (2 * clip_idx + 1) // (2 * num_clips))
    return torch.tensor(indices, dtype=torch.long)


def _load_json(path: str) -> Any:
    if not g_pathmgr.exists(path):
        raise DataError(f"{path}: not found (check DATA.PATH_TO_DATA_DIR)")
    with g_pathmgr.open(path, "r") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None


def read_ssv2_classes(path: str) -> Dict[str, int]:
    """``something-something-v2-labels.json`` -> ``{template: index}``, indices ``0 .. K-1`` each once.

    Raises:
        DataError: missing or invalid file, a non-integer index, or indices that are not ``0 .. K-1``.
    """
    table = _load_json(path)
    if not isinstance(table, dict) or not table:
        raise DataError(f'{path}: expected a non-empty object {{"<template>": "<index>", ...}}')
    classes = {}
    for template, index in table.items():
        try:
            classes[template] = int(index)
        except (TypeError, ValueError):
            raise DataError(f"{path}: template {template!r}: index {index!r} is not an integer") from None
    if sorted(classes.values()) != list(range(len(classes))):
        raise DataError(f"{path}: the indices are not 0 .. {len(classes) - 1}, each once")
    return classes


def read_ssv2_labels(path: str, classes: Dict[str, int]) -> Tuple[List[str], List[int]]:
    """A split file (``something-something-v2-{train,validation}.json``) -> video ids and their labels.

    The label is the index of the entry's ``template`` with its brackets removed, looked up in ``classes``.

    Raises:
        DataError: missing or invalid file, an entry without ``id`` / ``template``, or a template that is not
            in the labels file (the message names the file and the entry's id).
    """
    entries = _load_json(path)
    if not isinstance(entries, list) or not entries:
        raise DataError(f'{path}: expected a non-empty list of {{"id": ..., "template": ...}} entries')
    ids, labels = [], []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry:
            raise DataError(f"{path}: entry {position} has no 'id'")
        video_id = str(entry["id"])
        if not isinstance(entry.get("template"), str):
            raise DataError(f"{path}: entry id {video_id}: no 'template' string (a test-set file has no labels)")
        template = entry["template"].replace("[", "").replace("]", "")
        if template not in classes:
            raise DataError(f"{path}: entry id {video_id}: template {template!r} is not in {LABELS_FILE}")
        ids.append(video_id)
        labels.append(classes[template])
    return ids, labels


def read_frame_lists(path: str, prefix: str = "") -> Dict[str, List[str]]:
    """PySlowFast's frame list (``original_vido_id video_id frame_id path labels``) -> ``{video id: frame paths}``.

    Frames keep their row order. Relative paths are joined to ``prefix``, or to the csv's folder when it is empty.

    Raises:
        DataError: missing file or header, or a row without 5 fields (the message names file and line).
    """
    if not g_pathmgr.exists(path):
        raise DataError(f"{path}: not found")
    root = prefix or os.path.dirname(path)
    frames: Dict[str, List[str]] = {}
    with g_pathmgr.open(path, "r") as f:
        header = f.readline()
        if not header.startswith(FRAME_LIST_HEADER):
            raise DataError(f"{path}:1: expected the header '{FRAME_LIST_HEADER} video_id frame_id path labels'")
        for line_no, line in enumerate(f, start=2):
            row = line.split()
            if not row:
                continue
            if len(row) != 5:
                raise DataError(f"{path}:{line_no}: expected 5 fields, got {len(row)}: {line.strip()!r}")
            frames.setdefault(row[0], []).append(os.path.join(root, row[3]))
    return frames


def _test_views(cfg: CfgNode) -> Dict[str, Any]:
    """The test-view arguments of :class:`SSv2` for an experiment config."""
    data, test = cfg.DATA, cfg.TEST
    # PySlowFast tests SSv2 at a short side of TEST_CROP_SIZE (its Kinetics rule differs for one crop).
    short_side = data.TEST_SHORT_SIDE if data.TEST_SHORT_SIDE > 0 else data.TEST_CROP_SIZE
    return {
        "train": False,
        "eval_transform": VideoEvalTransform(short_side, data.TEST_CROP_SIZE, data.MEAN, data.STD),
        "num_clips": test.NUM_ENSEMBLE_VIEWS,
        "num_crops": test.NUM_SPATIAL_CROPS,
    }


def load_ssv2_views(cfg: CfgNode, path: str) -> torch.Tensor:
    """All test views of one video file for an SSv2 model: (V, C, T, H, W), V = clips x crops.

    Raises:
        VideoDecodeError: the file cannot be decoded (the message names it).
    """
    dataset = SSv2.for_prediction(cfg, path)
    return torch.stack([dataset.load_view(0, view) for view in range(dataset.num_views)])


def _read_image(path: str) -> torch.Tensor:
    """(3, H, W) uint8 RGB; Pillow's libjpeg decodes JPEG frames as OpenCV's (the tests compare both)."""
    try:
        with g_pathmgr.open(path, "rb") as f:
            image = Image.open(io.BytesIO(f.read()))
            image = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise VideoDecodeError(f"{path}: cannot read the frame ({err})") from None
    return torch.from_numpy(image.copy()).permute(2, 0, 1)


class SSv2(Kinetics):
    """Something-Something v2 clips: one frame per segment, multi-view test items as :class:`Kinetics`.

    Args:
        videos: per video, a video file path (decoded whole) or the list of its frame image paths.
        labels: class index per video.
        num_frames: segments, i.e. frames per clip.
        reverse_channels: flip the normalised clip's channels (``DATA.REVERSE_INPUT_CHANNEL``).
        ids: the SSv2 video ids, kept as ``ids`` (``paths`` holds the video file or the frames' folder).
        kwargs: :class:`Kinetics`'s (train, transforms, num_clips, num_crops, num_samples, ...).
    Items:
        ``(clip, label, index)`` exactly as :class:`Kinetics`; a video or frame that cannot be read is logged
        and replaced as there.
    """

    def __init__(
        self,
        videos: Sequence[Union[str, Sequence[str]]],
        labels: Sequence[int],
        num_frames: int,
        reverse_channels: bool = False,
        ids: Optional[Sequence[str]] = None,
        **kwargs: Any,
    ) -> None:
        if any(not isinstance(v, str) and not v for v in videos):
            raise ValueError("a video given as frames needs at least one frame path")
        # A video given as frames is named by its first frame's folder (scores files, log messages).
        paths = [v if isinstance(v, str) else os.path.dirname(v[0]) for v in videos]
        # Kinetics' sampling rate and fps arithmetic do not apply: the segments span the whole video.
        super().__init__(paths, labels, ClipSampling(int(num_frames), 1), **kwargs)
        self.frame_paths = [None if isinstance(v, str) else list(v) for v in videos]
        self.ids = list(ids) if ids is not None else None
        self.reverse_channels = bool(reverse_channels)

    @classmethod
    def from_config(cls, cfg: CfgNode, split: str) -> SSv2:
        """The ``split`` of the SSv2 data folder with the transforms of the experiment config.

        "train" gives augmented random clips of the train file; "val" and "test" the multi-view test views of
        the validation file (the per-view scores of "test" are saved by :meth:`aggregate`).

        Raises:
            DataError: a missing or malformed label file or frame list, a template not in the labels file, a
                video without frames in the frame list, or a label >= ``MODEL.NUM_CLASSES``.
        """
        data, test = cfg.DATA, cfg.TEST
        split_key = "train" if split == "train" else "val"
        classes = read_ssv2_classes(os.path.join(data.PATH_TO_DATA_DIR, LABELS_FILE))
        label_file = os.path.join(data.PATH_TO_DATA_DIR, SPLIT_FILES[split_key])
        ids, labels = read_ssv2_labels(label_file, classes)
        num_classes = cfg.MODEL.NUM_CLASSES
        if num_classes > 0 and max(labels) >= num_classes:
            raise DataError(f"{label_file}: label {max(labels)} >= MODEL.NUM_CLASSES={num_classes}")
        frame_list = os.path.join(data.PATH_TO_DATA_DIR, f"{split_key}.csv")
        if g_pathmgr.exists(frame_list):
            frames = read_frame_lists(frame_list, data.PATH_PREFIX)
            missing = [video_id for video_id in ids if video_id not in frames]
            if missing:
                raise DataError(
                    f"{frame_list}: no frames for {len(missing)} videos of {label_file}, e.g. id {missing[0]}"
                )
            videos: List[Union[str, List[str]]] = [frames[video_id] for video_id in ids]
            source = f"frames listed in {frame_list}"
        else:
            root = data.PATH_PREFIX or data.PATH_TO_DATA_DIR
            videos = [os.path.join(root, video_id + data.SSV2_VIDEO_SUFFIX) for video_id in ids]
            source = f"videos {os.path.join(root, '<id>' + data.SSV2_VIDEO_SUFFIX)}"
        logger.info("SSv2 %s: %d videos of %s, %d classes, %s", split, len(ids), label_file, len(classes), source)
        names = sorted(classes, key=classes.__getitem__)
        common = {
            "num_frames": data.NUM_FRAMES,
            "reverse_channels": data.REVERSE_INPUT_CHANNEL,
            "ids": ids,
            "num_retries": data.NUM_RETRIES,
            "classes": names,
        }
        if split == "train":
            return cls(
                videos,
                labels,
                train=True,
                train_transform=build_train_transform(cfg),
                num_samples=cfg.AUG.NUM_SAMPLE,
                **common,
            )
        results_path = ""
        if split == "test":
            results_path = test.SAVE_RESULTS_PATH or os.path.join(cfg.OUTPUT_DIR, "test_view_scores.npz")
        return cls(
            videos,
            labels,
            ensemble_method=test.ENSEMBLE_METHOD,
            results_path=results_path,
            **common,
            **_test_views(cfg),
        )

    @classmethod
    def for_prediction(cls, cfg: CfgNode, path: str) -> SSv2:
        """The test views of one video file as an SSv2 model sees them (for ``tools/predict.py``)."""
        if "REVERSE_INPUT_CHANNEL" not in cfg.DATA:  # a config loaded without the video keys: their defaults
            cfg = cfg.clone()
            cfg.defrost()
            add_video_config(cfg)
        return cls([path], [0], cfg.DATA.NUM_FRAMES, cfg.DATA.REVERSE_INPUT_CHANNEL, **_test_views(cfg))

    def frame_indices(self, num_video_frames: int, fps: float = 0.0, view: int = 0) -> torch.Tensor:
        """(T,) frame numbers of a training clip (``view`` ignored) or of test view ``view``; ``fps`` unused."""
        clip_idx = 0 if self.train else view_indices(view, self.num_crops)[0]
        return segment_frame_indices(num_video_frames, self.sampling.num_frames, self.train, clip_idx, self.num_clips)

    def read_frames(self, video: int, view: int) -> torch.Tensor:
        """The clip's frames, (T, 3, H, W) uint8 in BGR order (PySlowFast's OpenCV order).

        Raises:
            VideoDecodeError: the video or a frame cannot be read (the message names the file).
        """
        frame_paths = self.frame_paths[video]
        if frame_paths is not None:
            indices = self.frame_indices(len(frame_paths), view=view)
            images = [_read_image(frame_paths[i]) for i in indices.tolist()]
            if len({image.shape for image in images}) > 1:
                raise VideoDecodeError(f"{self.paths[video]}: frames of different sizes")
            frames = torch.stack(images)
        else:
            path = self.paths[video]
            with VideoReader(path) as reader:
                # Every frame: the count must be exact, and the segments cover the whole video anyway.
                frames = reader.get_all_frames(lambda count: self.frame_indices(count, view=view))
        return frames.flip(1)

    def _model_order(self, clip: torch.Tensor) -> torch.Tensor:
        return clip.flip(0) if self.reverse_channels else clip

    def load_view(self, video: int, view: int) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Read and transform one item (no retry): a training clip (or its copies) or test view ``view``."""
        frames = self.read_frames(video, view)
        if self.train:
            clips = [self._model_order(self.train_transform(frames)) for _ in range(self.num_samples)]
            return clips[0] if self.num_samples == 1 else clips
        return self._model_order(self.eval_transform(frames, view_indices(view, self.num_crops)[1]))
