"""Kinetics-style video classification data: ``<split>.csv`` files of ``path label`` rows (PySlowFast layout).

Training items are one random clip per video (``AUG.NUM_SAMPLE`` augmented copies of it with repeated
augmentation); test items are the views of a video, ``NUM_ENSEMBLE_VIEWS`` uniformly spaced clips x
``NUM_SPATIAL_CROPS`` crops, each carrying its video and view index so the scores can be summed per video.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from fvcore.common.config import CfgNode
from iopath.common.file_io import g_pathmgr
from torch.utils.data import Dataset
from torchvision.models.video import MViT_V2_S_Weights

from mvit.data.augment import augmentation_keys
from mvit.errors import ConfigError, DataError
from mvit.utils.distributed import get_rank

from ..config import add_video_config
from ..evaluation import aggregate_views, save_view_scores
from .decoding import VideoDecodeError, VideoReader
from .failures import DecodeStats
from .sampling import clip_frame_indices, eval_short_side, view_indices
from .transforms import VideoEvalTransform, VideoTrainTransform

__all__ = [
    "ClipSampling",
    "Kinetics",
    "VideoListNotFound",
    "build_eval_transform",
    "build_train_transform",
    "load_video_views",
    "read_class_names",
    "read_video_csv",
]

logger = logging.getLogger(__name__)


class VideoListNotFound(DataError, FileNotFoundError):
    """A csv video list that does not exist (a :class:`~mvit.errors.DataError` and a ``FileNotFoundError``)."""


def read_video_csv(
    path: str, prefix: str = "", separator: str = " ", num_classes: int = 0
) -> Tuple[List[str], List[int]]:
    """Parse a Kinetics csv: one ``<video path><separator><integer label>`` row per video.

    The label is what follows the last separator, so paths may contain the separator. Relative paths are
    joined to ``prefix``, or to the csv's folder when ``prefix`` is empty (a data folder can move). Blank
    lines are skipped. With ``num_classes`` > 0 every label must be below it.

    Raises:
        VideoListNotFound: no such csv file.
        DataError: a malformed row or a label out of range (the message names file and line), an unreadable
            file or no rows at all.
    """
    if not g_pathmgr.exists(path):
        raise VideoListNotFound(
            f"{path}: video list not found (DATA.PATH_TO_DATA_DIR holds train.csv, val.csv and test.csv)"
        )
    root = prefix or os.path.dirname(path)
    paths, labels = [], []
    expected = f"expected '<path>{separator}<label>' (DATA.PATH_LABEL_SEPARATOR is {separator!r})"
    try:
        with g_pathmgr.open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise DataError(f"{path}: cannot read the video list ({err})") from None
    for line_no, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise DataError(f"{path}:{line_no}: not UTF-8 text (is this a csv file?)") from None
        if not line:
            continue
        fields = line.rsplit(separator, 1)
        if len(fields) != 2 or not fields[0].strip():
            raise DataError(f"{path}:{line_no}: {expected}, got {line!r}")
        try:
            label = int(fields[1])
        except ValueError:
            raise DataError(f"{path}:{line_no}: label {fields[1]!r} is not an integer; {expected}") from None
        if label < 0:
            raise DataError(f"{path}:{line_no}: negative label {label}")
        if num_classes > 0 and label >= num_classes:
            raise DataError(f"{path}:{line_no}: label {label} >= MODEL.NUM_CLASSES={num_classes}")
        paths.append(os.path.join(root, fields[0].strip()))
        labels.append(label)
    if not paths:
        raise DataError(f"{path}: no videos listed ({expected} on each line)")
    return paths, labels


@dataclass(frozen=True)
class ClipSampling:
    """Which frames make a clip: ``num_frames`` frames every ``sampling_rate`` frames at ``target_fps``."""

    num_frames: int
    sampling_rate: int
    target_fps: float = 30.0
    use_offset: bool = True


class Kinetics(Dataset):
    """Video classification dataset over a list of files and integer labels.

    Args:
        paths / labels: one entry per video.
        sampling: how a clip is taken from a video.
        train: random clips and augmentation (one item per video) or deterministic test views
            (``num_clips * num_crops`` items per video, clip-major).
        train_transform / eval_transform: the transform of the mode.
        num_clips / num_crops: test views per video.
        num_samples: augmented copies of each training clip (repeated augmentation; decoded once).
        num_retries: videos tried for one item before giving up. An unreadable video is logged with its
            path and replaced by another one: a random video in training (then the following ones), the same
            view of the next video at test time.
        classes: class names, or None.
        results_path: where :meth:`aggregate` saves the per-view scores ("" = nowhere).
        max_failed_fraction: training stops with a :class:`~mvit.errors.DataError` when more than this share
            of an epoch's items had an unreadable video (:meth:`train_hooks`); >= 1 never stops.
        source: what the paths came from (the csv file), named in that error.
    Bad videos:
        Missing files, files PyAV cannot open (random bytes, truncated with the index at the end, zero frames,
        no video stream) and spans that fail to decode (a file truncated or damaged in the middle) are logged,
        counted (:attr:`stats`) and replaced as above. Videos shorter than one clip repeat their last frame
        (PySlowFast's clamp); any frame size and frame rate is resampled to the clip's (``TARGET_FPS``, the
        transforms' sizes), so such videos load like the others.
    Items:
        ``(clip, label, index)`` as the engine expects: clip (C, T, H, W) float, or a list of ``num_samples``
        such clips; ``index`` is the item actually decoded, ``video * num_views + view``.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int],
        sampling: ClipSampling,
        train: bool,
        train_transform: Optional[VideoTrainTransform] = None,
        eval_transform: Optional[VideoEvalTransform] = None,
        num_clips: int = 1,
        num_crops: int = 1,
        num_samples: int = 1,
        num_retries: int = 10,
        classes: Optional[List[str]] = None,
        ensemble_method: str = "sum",
        results_path: str = "",
        max_failed_fraction: float = 1.0,
        source: str = "the video list",
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        if (train and train_transform is None) or (not train and eval_transform is None):
            raise ValueError("a training dataset needs train_transform, a test dataset eval_transform")
        if num_crops not in (1, 3):
            raise ConfigError(f"TEST.NUM_SPATIAL_CROPS must be 1 or 3, got {num_crops}")
        if not 0.0 <= max_failed_fraction:
            raise ConfigError(f"DATA.MAX_FAILED_FRACTION must be >= 0 (1 = never stop), got {max_failed_fraction}")
        self.paths, self.labels = list(paths), [int(label) for label in labels]
        self.sampling = sampling
        self.train = train
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.num_clips, self.num_crops = int(num_clips), int(num_crops)
        self.num_views = 1 if train else self.num_clips * self.num_crops
        self.num_samples = max(1, int(num_samples)) if train else 1
        self.num_retries = max(1, int(num_retries))
        self.classes = classes
        self.ensemble_method, self.results_path = ensemble_method, results_path
        self._num_aggregations = 0
        # Videos that could not be opened in this process: skipped without reading again (the replacement
        # sequence is the same with or without this cache, so items stay a pure function of their seed).
        self._unreadable: set = set()
        self.max_failed_fraction, self.source = float(max_failed_fraction), source
        # Items loaded / replaced, counted by every loader worker (shared memory): see train_hooks.
        self.stats = DecodeStats()
        # The video reader class (the decoding backend); tests and the loader benchmark swap in the reference.
        self.reader = VideoReader

    @classmethod
    def from_config(cls, cfg: CfgNode, split: str) -> Kinetics:
        """``<DATA.PATH_TO_DATA_DIR>/<split>.csv`` with the transforms of the experiment config.

        "train" gives augmented random clips; "val" and "test" the multi-view test views (the per-view
        scores of "test" are saved by :meth:`aggregate`). Class names come from ``classes.txt`` in the data
        folder (one per line), else torchvision's Kinetics-400 names for a 400-class model.
        """
        data = cfg.DATA
        if not data.PATH_TO_DATA_DIR:
            raise ConfigError("DATA.PATH_TO_DATA_DIR is not set (a folder with train.csv, val.csv and test.csv)")
        csv = os.path.join(data.PATH_TO_DATA_DIR, f"{split}.csv")
        num_classes = cfg.MODEL.NUM_CLASSES
        paths, labels = read_video_csv(csv, data.PATH_PREFIX, data.PATH_LABEL_SEPARATOR, num_classes)
        if data.DECODING_BACKEND != "pyav":
            raise ConfigError(f"DATA.DECODING_BACKEND={data.DECODING_BACKEND!r}: only 'pyav' is available")
        sampling = ClipSampling(data.NUM_FRAMES, data.SAMPLING_RATE, data.TARGET_FPS, data.USE_OFFSET_SAMPLING)
        common = {
            "sampling": sampling,
            "num_retries": data.NUM_RETRIES,
            "classes": read_class_names(data.PATH_TO_DATA_DIR, num_classes),
            "max_failed_fraction": data.MAX_FAILED_FRACTION,
            "source": csv,
        }
        if split == "train":
            # Each process takes TRAIN.BATCH_SIZE / NUM_GPUS items per step, each item NUM_SAMPLE clips.
            transform = build_train_transform(cfg)
            return cls(paths, labels, train=True, train_transform=transform, num_samples=cfg.AUG.NUM_SAMPLE, **common)
        test = cfg.TEST
        results_path = ""
        if split == "test":
            results_path = test.SAVE_RESULTS_PATH or os.path.join(cfg.OUTPUT_DIR, "test_view_scores.npz")
        return cls(
            paths,
            labels,
            train=False,
            eval_transform=build_eval_transform(cfg),
            num_clips=test.NUM_ENSEMBLE_VIEWS,
            num_crops=test.NUM_SPATIAL_CROPS,
            ensemble_method=test.ENSEMBLE_METHOD,
            results_path=results_path,
            **common,
        )

    @property
    def num_videos(self) -> int:
        return len(self.paths)

    def __len__(self) -> int:
        return self.num_videos * self.num_views

    def frame_indices(self, num_video_frames: int, fps: float, view: int) -> torch.Tensor:
        """(T,) frame numbers of a training clip (``view`` ignored) or of test view ``view`` of a video."""
        s = self.sampling
        clip_idx = -1 if self.train else view_indices(view, self.num_crops)[0]
        return clip_frame_indices(
            num_video_frames, s.num_frames, s.sampling_rate, fps, s.target_fps, clip_idx, self.num_clips, s.use_offset
        )

    def load_view(self, video: int, view: int) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Decode and transform one item (no retry): a training clip (or its copies) or test view ``view``."""
        try:
            reader = self.reader(self.paths[video])
        except VideoDecodeError:
            # A file that cannot be opened fails for every clip: skip it from now on. A span that fails to
            # decode is not remembered, as other spans of the same file may decode.
            self._unreadable.add(video)
            raise
        with reader:
            frames = reader.get_frames(self.frame_indices(reader.num_frames, float(reader.fps), view))
        if self.train:
            clips = [self.train_transform(frames) for _ in range(self.num_samples)]
            return clips[0] if self.num_samples == 1 else clips
        return self.eval_transform(frames, view_indices(view, self.num_crops)[1])

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int, int]:
        video, view = divmod(int(index), self.num_views)
        for attempt in range(self.num_retries):
            last = self.paths[video]
            if video not in self._unreadable:
                try:
                    clip = self.load_view(video, view)
                except VideoDecodeError as err:
                    logger.warning("skipping unreadable video (replaced by another one): %s", err)
                else:
                    self.stats.record(failed=attempt > 0)
                    return clip, self.labels[video], video * self.num_views + view
            # A random video first in training, then the following ones: a run of unreadable files ends.
            video = random.randrange(self.num_videos) if self.train and attempt == 0 else (video + 1) % self.num_videos
        self.stats.record(failed=True)
        raise VideoDecodeError(
            f"{self.num_retries} videos in a row could not be decoded (last: {last}); "
            "check DATA.PATH_TO_DATA_DIR, DATA.PATH_PREFIX and the files"
        )

    def train_hooks(self) -> list:
        """Engine hook: stop training when more than ``max_failed_fraction`` of an epoch's items failed."""
        from ..hooks import FailedItemsCheck  # only the training loop calls this: the dataset imports no engine

        return [FailedItemsCheck(self.stats, self.max_failed_fraction, self.source)] if self.train else []

    def aggregate(
        self, indices: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, name: Optional[str] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Engine hook for multi-view testing: per-item logits -> per-video ensemble of softmax scores.

        The per-view scores go to ``results_path`` (rank 0). Another evaluation of the same dataset (the EMA
        weights) writes ``<results_path stem>_<name or count>.npz`` beside it instead of overwriting it.

        Args:
            indices / scores / labels: (N,) item indices, (N, K) logits, (N,) labels of every item of every rank.
            name: what is evaluated (e.g. "test_ema"), used in the file name of later evaluations.
        Returns:
            ``(scores (M, K), labels (M,))`` for the M videos with at least one decoded view.
        """
        self._num_aggregations += 1
        video, view = indices.long() // self.num_views, indices.long() % self.num_views
        result = aggregate_views(
            scores.float().softmax(-1), labels, video, view, self.num_videos, self.num_views, self.ensemble_method
        )
        missing = self.num_videos - result.num_videos
        logger.info(
            "multi-view test: %d videos x %d views (%d clips x %d crops), top-1 %.2f top-5 %.2f%s",
            result.num_videos, self.num_views, self.num_clips, self.num_crops, result.topk[1], result.topk[5],
            f"; {missing} videos had no decodable view and are left out" if missing else "",
        )  # fmt: skip
        if self.results_path and get_rank() == 0:
            path = self.results_path
            if self._num_aggregations > 1:
                stem, ext = os.path.splitext(path)
                path = f"{stem}_{name or self._num_aggregations}{ext}"
            save_view_scores(result, path, self.paths)
            logger.info("per-view scores saved to %s", path)
        seen = result.views_seen > 0
        return result.video_scores[seen], result.labels[seen]


def load_video_views(cfg: CfgNode, path: str) -> torch.Tensor:
    """All test views of one video file, for prediction: (V, C, T, H, W) with V = clips x crops.

    Raises:
        VideoDecodeError: the file cannot be decoded (the message names it).
    """
    if "SAMPLING_RATE" not in cfg.DATA:  # a config loaded without the video keys: use their defaults
        cfg = cfg.clone()
        cfg.defrost()
        add_video_config(cfg)
    data, test = cfg.DATA, cfg.TEST
    dataset = Kinetics(
        [path],
        [0],
        ClipSampling(data.NUM_FRAMES, data.SAMPLING_RATE, data.TARGET_FPS, data.USE_OFFSET_SAMPLING),
        train=False,
        eval_transform=build_eval_transform(cfg),
        num_clips=test.NUM_ENSEMBLE_VIEWS,
        num_crops=test.NUM_SPATIAL_CROPS,
    )
    return torch.stack([dataset.load_view(0, view) for view in range(dataset.num_views)])


def build_train_transform(cfg: CfgNode) -> VideoTrainTransform:
    """The training augmentation of an experiment config (RandAugment and erasing only with ``AUG.ENABLE``)."""
    data, aug = cfg.DATA, cfg.AUG
    with augmentation_keys(cfg):
        return VideoTrainTransform(
            crop_size=data.TRAIN_CROP_SIZE,
            jitter_scales=data.TRAIN_JITTER_SCALES,
            mean=data.MEAN,
            std=data.STD,
            crop_scale=data.TRAIN_JITTER_SCALES_RELATIVE,
            crop_ratio=data.TRAIN_JITTER_ASPECT_RELATIVE,
            flip=data.RANDOM_FLIP,
            rand_augment=aug.AA_TYPE if aug.ENABLE else "",
            interpolation=aug.INTERPOLATION,
            erase_prob=aug.RE_PROB if aug.ENABLE else 0.0,
            erase_mode=aug.RE_MODE,
            erase_count=aug.RE_COUNT,
            inverse_uniform=data.INV_UNIFORM_SAMPLE,
        )


def build_eval_transform(cfg: CfgNode) -> VideoEvalTransform:
    """The test-view transform of an experiment config (short side by PySlowFast's rule unless set)."""
    data, test = cfg.DATA, cfg.TEST
    short_side = eval_short_side(
        data.TEST_SHORT_SIDE, data.TRAIN_JITTER_SCALES, data.TEST_CROP_SIZE, test.NUM_SPATIAL_CROPS
    )
    return VideoEvalTransform(short_side, data.TEST_CROP_SIZE, data.MEAN, data.STD)


def read_class_names(data_dir: str, num_classes: int) -> Optional[List[str]]:
    """Names from ``<data_dir>/classes.txt`` (line i = label i), else Kinetics-400's for 400 classes, else None."""
    path = os.path.join(data_dir, "classes.txt")
    if g_pathmgr.exists(path):
        with g_pathmgr.open(path, "r") as f:
            names = [line.strip() for line in f if line.strip()]
        if num_classes > 0 and len(names) != num_classes:
            raise DataError(f"{path}: {len(names)} class names but MODEL.NUM_CLASSES={num_classes}")
        return names
    if num_classes == 400:
        return list(MViT_V2_S_Weights.KINETICS400_V1.meta["categories"])
    return None
