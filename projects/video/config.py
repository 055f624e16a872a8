"""Config keys of the video project (PySlowFast names), added to the core defaults.

Pass :func:`add_video_config` as an ``extensions`` entry of :func:`mvit.config.load_config`; it only adds
keys (detectron2's ``add_*_config`` pattern) and leaves every core default as it is, so a K400 yaml states
its own ``DATA.MEAN`` / ``DATA.STD`` (0.45 / 0.225 for S and B, ImageNet's for L).
"""

from __future__ import annotations

from fvcore.common.config import CfgNode

__all__ = ["add_video_config"]


def add_video_config(cfg: CfgNode) -> None:
    """Add the Kinetics / video keys to ``cfg`` in place (``DATA.NUM_FRAMES`` is a core key)."""
    data = cfg.DATA
    # Interval between two sampled frames, counted in frames at TARGET_FPS.
    data.SAMPLING_RATE = 4
    # Videos are resampled to this frame rate before sampling (a 60 fps video skips every other frame).
    data.TARGET_FPS = 30
    # Training: the short side is resized to a size drawn uniformly from this range.
    data.TRAIN_JITTER_SCALES = [256, 320]
    # Sample 1 / size uniformly in [1 / max, 1 / min] instead of the size itself (PySlowFast option).
    data.INV_UNIFORM_SAMPLE = False
    # Random-resized-crop area fraction and aspect range; [] falls back to a square random crop.
    data.TRAIN_JITTER_SCALES_RELATIVE = [0.08, 1.0]
    data.TRAIN_JITTER_ASPECT_RELATIVE = [0.75, 1.3333]
    data.RANDOM_FLIP = True
    # Short side of the frames at test time before the crops. 0 = PySlowFast's rule: TRAIN_JITTER_SCALES[0]
    # (256) with one center crop, TEST_CROP_SIZE with 3 crops (224; 312 for L, whose crop is 312).
    data.TEST_SHORT_SIDE = 0
    # Test clips evenly spaced with integer offsets, the first at frame 0 and the last at the end (the
    # MViTv2 K400 configs' USE_OFFSET_SAMPLING); False spaces them at delta * i / NUM_ENSEMBLE_VIEWS.
    data.USE_OFFSET_SAMPLING = True
    # Csv rows are `<path><PATH_LABEL_SEPARATOR><label>`; PATH_PREFIX is joined before relative paths.
    data.PATH_PREFIX = ""
    data.PATH_LABEL_SEPARATOR = " "
    # Only "pyav": torchvision 0.29 has no video decoder, torchcodec needs a system FFmpeg, decord 0.6 was
    # slower on H.264 and MPEG-4 clips (docs/speed.md, "Input pipelines").
    data.DECODING_BACKEND = "pyav"
    # Attempts per item before giving up; each failed video is logged and replaced by another one.
    data.NUM_RETRIES = 10
    # Training stops with an error when more than this share of an epoch's items had an unreadable video
    # (replaced by another one, each logged with its path); 0 tolerates none, 1 never stops.
    data.MAX_FAILED_FRACTION = 0.1
    # Something-Something v2 (the `ssv2` dataset). Its frames enter the transforms in BGR, as PySlowFast
    # reads them with OpenCV; True flips the normalised clip to RGB (PySlowFast's key and default; the
    # released MViTv2 SSv2 configs set True). Videos without a frame list are <id><SSV2_VIDEO_SUFFIX>.
    data.REVERSE_INPUT_CHANNEL = False
    data.SSV2_VIDEO_SUFFIX = ".webm"

    test = cfg.TEST
    # Temporal clips per video (uniformly spaced) and spatial crops per clip (1: center, 3: both ends
    # and center along the long side).
    test.NUM_ENSEMBLE_VIEWS = 5
    test.NUM_SPATIAL_CROPS = 1
    # How the per-view softmax scores of a video are combined: "sum" (PySlowFast) or "max".
    test.ENSEMBLE_METHOD = "sum"
    # Where the per-view scores are saved (.npz); "" = <OUTPUT_DIR>/test_view_scores.npz.
    test.SAVE_RESULTS_PATH = ""
