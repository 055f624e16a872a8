"""Released MViTv2 weights: one entry per published file, beside the zoo model it loads into.

Tags follow timm: ``<zoo model>.<publisher>_<data>`` (``mvitv2_t.fb_in1k``, ``mvitv2_s_16x4.fb_k400``). Each
entry carries torchvision-style metadata: URL, publisher, file format, published metrics, the preprocessing
the weights expect, the class-name set, the sha256 prefix where the publisher states one (torchvision's and
OpenMMLab's file names carry it), and the :class:`~mvit.models.MViTConfig` fields that differ from the zoo
model (a 21k-class head, a class token). URLs are the publishers' own (their READMEs, read on 2026-11-29):

- facebookresearch/mvit README: ImageNet-1k T/S/B/L, ImageNet-21k B/L/H;
- facebookresearch/SlowFast ``projects/mvitv2/README.md``: Kinetics-400 and Something-Something v2 S/B/L;
- torchvision ``MViT_V2_S_Weights.KINETICS400_V1``;
- open-mmlab/mmpretrain ``configs/mvit/README.md`` and ``metafile.yml``: ImageNet-1k T/S/B/L converted from the
  official files;
- facebookresearch/detectron2 ``projects/MViTv2/README.md``: COCO Mask R-CNN / Cascade Mask R-CNN detectors.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import ConfigError

__all__ = [
    "Preprocessing",
    "Weights",
    "class_names",
    "default_weights",
    "get_weights",
    "is_weights",
    "list_weights",
    "register_weights",
]


@dataclass(frozen=True)
class Preprocessing:
    """What the weights expect at test time: normalisation, resize + center crop, frames and views."""

    mean: Tuple[float, ...] = (0.485, 0.456, 0.406)
    std: Tuple[float, ...] = (0.229, 0.224, 0.225)
    crop_size: int = 224
    resize_size: int = 256  # short side before the center crop (224 / 0.875)
    interpolation: str = "bicubic"
    num_frames: int = 1  # 1: images; video: frames per clip
    sampling_rate: int = 0  # video: one frame every N of the decoded video (the clip spans (num_frames-1)*N+1)
    test_views: Tuple[int, int] = (1, 1)  # video: temporal clips x spatial crops, scores summed
    channel_order: str = "RGB"


@dataclass(frozen=True)
class Weights:
    """One released checkpoint (see the module docstring)."""

    tag: str
    url: str
    publisher: str
    format: str  # mvit.checkpoint format name: official, mmpretrain, torchvision, detectron2
    dataset: str
    class_set: str  # name for class_names(): imagenet-1k, imagenet-21k, kinetics-400, ssv2, coco
    num_classes: int
    metrics: Dict[str, float] = field(default_factory=dict)
    preprocessing: Preprocessing = Preprocessing()
    sha256: Optional[str] = None
    overrides: Dict[str, object] = field(default_factory=dict)  # MViTConfig fields that differ from the zoo model
    detector: Optional[str] = None  # a whole detectron2 detector: its config in projects/detection/configs
    hf_hub_id: Optional[str] = None  # the same weights on the Hugging Face hub (timm's safetensors release)

    @property
    def arch(self) -> str:
        """The zoo model the weights load into."""
        return self.tag.split(".", 1)[0]

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def is_video(self) -> bool:
        return self.preprocessing.num_frames > 1

    @property
    def class_names(self) -> Optional[List[str]]:
        """The names of the ``num_classes`` outputs, in output order (:func:`class_names` of ``class_set``), or
        None where no public list exists (Something-Something v2, ImageNet-21k: the data set's own files)."""
        return class_names(self.class_set)

    def transforms(self) -> Callable[[Any], Any]:
        """The test-time transform the weights expect (torchvision's ``weights.transforms()``).

        Images: PIL image or uint8 tensor (C, H, W) -> normalised float (3, crop, crop). Clips: frames already
        sampled (``preprocessing.num_frames``, one every ``preprocessing.sampling_rate``), uint8 (T, H, W, C) or
        (T, C, H, W) RGB -> normalised float (C, T, crop, crop). See :mod:`mvit.models.presets`.
        """
        from .presets import ClipEval, ImageEval  # torchvision is imported only here

        p = self.preprocessing
        if self.detector is not None:
            raise ConfigError(f"{self.tag} is a whole detectron2 detector: its transforms are its config's")
        if self.is_video:
            return ClipEval(p.crop_size, p.resize_size, p.mean, p.std, p.interpolation, p.num_frames,
                            p.sampling_rate, p.channel_order)  # fmt: skip
        return ImageEval(p.crop_size, p.resize_size, p.mean, p.std, p.interpolation)


_REGISTRY: Dict[str, Weights] = {}


def register_weights(weights: Weights) -> Weights:
    if weights.tag in _REGISTRY:
        raise ValueError(f"weights {weights.tag!r} are already registered")
    _REGISTRY[weights.tag] = weights
    return weights


def is_weights(tag: str) -> bool:
    """Whether ``tag`` names a registered release."""
    return tag in _REGISTRY


def list_weights(arch: Optional[str] = None, include_detectors: bool = True) -> List[str]:
    """Registered tags, all or those of one zoo model."""
    return sorted(
        tag
        for tag, w in _REGISTRY.items()
        if (arch is None or w.arch == arch) and (include_detectors or w.detector is None)
    )


def get_weights(tag: str) -> Weights:
    """The entry of ``tag`` (``"mvitv2_t.fb_in1k"``); a bare zoo name gives its default weights."""
    if tag in _REGISTRY:
        return _REGISTRY[tag]
    default = default_weights(tag)
    if default is not None:
        return default
    close = difflib.get_close_matches(tag, list(_REGISTRY), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(list_weights())}"
    raise ConfigError(f"unknown weights {tag!r}{hint}")


def default_weights(arch: str) -> Optional[Weights]:
    """The first registered classifier weights of a zoo model (the publisher's own release first), or None."""
    for w in _REGISTRY.values():
        if w.arch == arch and w.detector is None:
            return w
    return None


def class_names(class_set: str) -> Optional[List[str]]:
    """Names of a class set through public APIs (torchvision's weights metadata); None when none is public."""
    from torchvision.models import ResNet50_Weights
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights
    from torchvision.models.video import MViT_V2_S_Weights

    sources = {
        "imagenet-1k": lambda: ResNet50_Weights.IMAGENET1K_V2.meta["categories"],
        "kinetics-400": lambda: MViT_V2_S_Weights.KINETICS400_V1.meta["categories"],
        "coco": lambda: MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"],
    }
    return list(sources[class_set]()) if class_set in sources else None


# --------------------------------------------------------------------------- the releases
_FB_MVIT = "https://dl.fbaipublicfiles.com/mvit/mvitv2_models"
_PYSF = "https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/mvitv2/pysf_video_models"
_MMPRE = "https://download.openmmlab.com/mmclassification/v0/mvit"
_D2 = "https://dl.fbaipublicfiles.com/detectron2/MViTv2"

_IN1K = Preprocessing()
_K400_MEAN, _K400_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
# The image repo's class-token models add the pooled q to the class token too (timm's *_cls follow it).
_IN21K_HEAD = dict(cls_embed_on=True, residual_pooling_cls=True, num_classes=19168)


def _video(frames: int, rate: int, crop: int, views: Tuple[int, int], **kw) -> Preprocessing:
    kw.setdefault("mean", _K400_MEAN)
    kw.setdefault("std", _K400_STD)
    kw.setdefault("resize_size", crop)  # PySlowFast tests at short side = crop size
    kw.setdefault("interpolation", "bilinear")  # PySlowFast's short-side scale (F.interpolate, bilinear)
    return Preprocessing(crop_size=crop, num_frames=frames, sampling_rate=rate, test_views=views, **kw)


for _w in (
    # facebookresearch/mvit, ImageNet-1k (top-1 from its README)
    Weights("mvitv2_t.fb_in1k", f"{_FB_MVIT}/MViTv2_T_in1k.pyth", "facebookresearch/mvit", "official",
            "imagenet-1k", "imagenet-1k", 1000, {"top1": 82.3}, _IN1K, hf_hub_id="timm/mvitv2_tiny.fb_in1k"),
    Weights("mvitv2_s.fb_in1k", f"{_FB_MVIT}/MViTv2_S_in1k.pyth", "facebookresearch/mvit", "official",
            "imagenet-1k", "imagenet-1k", 1000, {"top1": 83.6}, _IN1K, hf_hub_id="timm/mvitv2_small.fb_in1k"),
    Weights("mvitv2_b.fb_in1k", f"{_FB_MVIT}/MViTv2_B_in1k.pyth", "facebookresearch/mvit", "official",
            "imagenet-1k", "imagenet-1k", 1000, {"top1": 84.4}, _IN1K, hf_hub_id="timm/mvitv2_base.fb_in1k"),
    Weights("mvitv2_l.fb_in1k", f"{_FB_MVIT}/MViTv2_L_in1k.pyth", "facebookresearch/mvit", "official",
            "imagenet-1k", "imagenet-1k", 1000, {"top1": 85.3}, _IN1K, hf_hub_id="timm/mvitv2_large.fb_in1k"),
    # facebookresearch/mvit, ImageNet-21k (19,168 classes, class token; L expands channels in attention)
    Weights("mvitv2_b.fb_in21k", f"{_FB_MVIT}/MViTv2_B_in21k.pyth", "facebookresearch/mvit", "official",
            "imagenet-21k", "imagenet-21k", 19168, {}, _IN1K, overrides=dict(_IN21K_HEAD),
            hf_hub_id="timm/mvitv2_base_cls.fb_inw21k"),
    Weights("mvitv2_l.fb_in21k", f"{_FB_MVIT}/MViTv2_L_in21k.pyth", "facebookresearch/mvit", "official",
            "imagenet-21k", "imagenet-21k", 19168, {}, _IN1K, overrides=dict(_IN21K_HEAD, dim_mul_in_att=True),
            hf_hub_id="timm/mvitv2_large_cls.fb_inw21k"),
    Weights("mvitv2_h.fb_in21k", f"{_FB_MVIT}/MViTv2_H_in21k.pyth", "facebookresearch/mvit", "official",
            "imagenet-21k", "imagenet-21k", 19168, {}, _IN1K, overrides=dict(_IN21K_HEAD),
            hf_hub_id="timm/mvitv2_huge_cls.fb_inw21k"),
    # open-mmlab/mmpretrain, converted from the official ImageNet-1k files (top-1 from its README)
    Weights("mvitv2_t.mmpretrain_in1k", f"{_MMPRE}/mvitv2-tiny_3rdparty_in1k_20220722-db7beeef.pth",
            "open-mmlab/mmpretrain", "mmpretrain", "imagenet-1k", "imagenet-1k", 1000, {"top1": 82.33, "top5": 96.15},
            _IN1K, sha256="db7beeef"),
    Weights("mvitv2_s.mmpretrain_in1k", f"{_MMPRE}/mvitv2-small_3rdparty_in1k_20220722-986bd741.pth",
            "open-mmlab/mmpretrain", "mmpretrain", "imagenet-1k", "imagenet-1k", 1000, {"top1": 83.63, "top5": 96.51},
            _IN1K, sha256="986bd741"),
    Weights("mvitv2_b.mmpretrain_in1k", f"{_MMPRE}/mvitv2-base_3rdparty_in1k_20220722-9c4f0a17.pth",
            "open-mmlab/mmpretrain", "mmpretrain", "imagenet-1k", "imagenet-1k", 1000, {"top1": 84.34, "top5": 96.86},
            _IN1K, sha256="9c4f0a17"),
    Weights("mvitv2_l.mmpretrain_in1k", f"{_MMPRE}/mvitv2-large_3rdparty_in1k_20220722-2b57b983.pth",
            "open-mmlab/mmpretrain", "mmpretrain", "imagenet-1k", "imagenet-1k", 1000, {"top1": 85.25, "top5": 97.14},
            _IN1K, sha256="2b57b983"),
    # facebookresearch/SlowFast, Kinetics-400 (top-1 / top-5 from projects/mvitv2/README.md)
    Weights("mvitv2_s_16x4.fb_k400", f"{_PYSF}/MViTv2_S_16x4_k400_f302660347.pyth", "facebookresearch/SlowFast",
            "official", "kinetics-400", "kinetics-400", 400, {"top1": 81.0, "top5": 94.6},
            _video(16, 4, 224, (5, 1))),
    Weights("mvitv2_b_32x3.fb_k400", f"{_PYSF}/MViTv2_B_32x3_k400_f304025456.pyth", "facebookresearch/SlowFast",
            "official", "kinetics-400", "kinetics-400", 400, {"top1": 82.9, "top5": 95.7},
            _video(32, 3, 224, (5, 1))),
    Weights("mvitv2_l_40x3.fb_k400", f"{_PYSF}/MViTv2_L_40x3_k400_f306903192.pyth", "facebookresearch/SlowFast",
            "official", "kinetics-400", "kinetics-400", 400, {"top1": 86.1, "top5": 97.0},
            _video(40, 3, 312, (5, 3), mean=_IN1K.mean, std=_IN1K.std)),
    # facebookresearch/SlowFast, Something-Something v2 (174 classes; frames read BGR, as its configs say)
    Weights("mvitv2_s_16x4.fb_ssv2", f"{_PYSF}/MViTv2_S_16x4_ssv2_f308341823.pyth", "facebookresearch/SlowFast",
            "official", "something-something-v2", "ssv2", 174, {"top1": 68.2, "top5": 91.4},
            _video(16, 4, 224, (1, 3), channel_order="BGR"), overrides={"num_classes": 174}),
    Weights("mvitv2_b_32x3.fb_ssv2", f"{_PYSF}/MViTv2_B_32x3_ssv2_f305803282.pyth", "facebookresearch/SlowFast",
            "official", "something-something-v2", "ssv2", 174, {"top1": 70.5, "top5": 92.7},
            _video(32, 3, 224, (1, 3), channel_order="BGR"), overrides={"num_classes": 174}),
    Weights("mvitv2_l_40x3.fb_ssv2", f"{_PYSF}/MViTv2_L_40x3_ssv2_f309603968.pyth", "facebookresearch/SlowFast",
            "official", "something-something-v2", "ssv2", 174, {"top1": 73.3, "top5": 94.1},
            _video(40, 3, 312, (1, 3), mean=_IN1K.mean, std=_IN1K.std, channel_order="BGR"),
            overrides={"num_classes": 174}),
    # torchvision MViT_V2_S_Weights.KINETICS400_V1 (the same architecture as PySlowFast's S 16x4)
    Weights("mvitv2_s_16x4.tv_k400", "https://download.pytorch.org/models/mvit_v2_s-ae3be167.pth", "pytorch/vision",
            "torchvision", "kinetics-400", "kinetics-400", 400, {"top1": 80.757, "top5": 94.665},
            _video(16, 4, 224, (5, 1), resize_size=256, interpolation="bilinear"), sha256="ae3be167"),
    # facebookresearch/detectron2 projects/MViTv2, COCO (box / mask AP from its README); whole detectors
    Weights("mvitv2_t.fb_coco_mask_rcnn", f"{_D2}/mask_rcnn_mvitv2_t_3x/f307611773/model_final_1a1c30.pkl",
            "facebookresearch/detectron2", "detectron2", "coco", "coco", 80, {"box_ap": 48.3, "mask_ap": 43.8},
            detector="mask_rcnn_mvitv2_t_3x"),
    Weights("mvitv2_t.fb_coco_cascade", f"{_D2}/cascade_mask_rcnn_mvitv2_t_3x/f308344828/model_final_c6967a.pkl",
            "facebookresearch/detectron2", "detectron2", "coco", "coco", 80, {"box_ap": 52.2, "mask_ap": 45.0},
            detector="cascade_mask_rcnn_mvitv2_t_3x"),
    Weights("mvitv2_s.fb_coco_cascade", f"{_D2}/cascade_mask_rcnn_mvitv2_s_3x/f308344647/model_final_279baf.pkl",
            "facebookresearch/detectron2", "detectron2", "coco", "coco", 80, {"box_ap": 53.2, "mask_ap": 46.0},
            detector="cascade_mask_rcnn_mvitv2_s_3x"),
    Weights("mvitv2_b.fb_coco_cascade", f"{_D2}/cascade_mask_rcnn_mvitv2_b_3x/f308109448/model_final_421a91.pkl",
            "facebookresearch/detectron2", "detectron2", "coco", "coco", 80, {"box_ap": 54.1, "mask_ap": 46.7},
            detector="cascade_mask_rcnn_mvitv2_b_3x"),
    Weights("mvitv2_b.fb_in21k_coco_cascade",
            f"{_D2}/cascade_mask_rcnn_mvitv2_b_in12k_3x/f309003202/model_final_be5168.pkl",
            "facebookresearch/detectron2", "detectron2", "coco", "coco", 80, {"box_ap": 54.9, "mask_ap": 47.4},
            detector="cascade_mask_rcnn_mvitv2_b_in21k_3x"),
    Weights("mvitv2_l.fb_in21k_coco_cascade",
            f"{_D2}/cascade_mask_rcnn_mvitv2_l_in12k_lsj_50ep/f308099658/model_final_c41c5a.pkl",
            "facebookresearch/detectron2", "detectron2", "coco", "coco", 80, {"box_ap": 55.8, "mask_ap": 48.3},
            detector="cascade_mask_rcnn_mvitv2_l_in21k_lsj_50ep"),
    Weights("mvitv2_h.fb_in21k_coco_cascade",
            f"{_D2}/cascade_mask_rcnn_mvitv2_h_in12k_lsj_3x/f309013744/model_final_30d36b.pkl",
            "facebookresearch/detectron2", "detectron2", "coco", "coco", 80, {"box_ap": 56.1, "mask_ap": 48.5},
            detector="cascade_mask_rcnn_mvitv2_h_in21k_lsj_3x"),
):  # fmt: skip
    register_weights(_w)
