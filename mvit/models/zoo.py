"""Registry of named MViTv2 variants with their metadata (torchvision style); build them with ``create_model``."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from ..errors import ConfigError
from .config import MViTConfig

__all__ = ["ModelInfo", "is_model", "list_aliases", "list_models", "model_info", "register_alias", "register_model"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
KINETICS_MEAN, KINETICS_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


@dataclass(frozen=True)
class ModelInfo:
    """Metadata beside a builder (torchvision style). ``gflops``: fvcore, batch 1, one multiply-add = one flop.

    The training and test recipe (frames' sampling rate, test views, ...) lives in the model's yaml under
    ``configs/``, which names the model by ``MVIT.ARCH``.
    """

    name: str
    build_config: Callable[[], MViTConfig]
    dataset: str
    num_params: int
    gflops: float
    published_top1: Optional[float] = None
    source: str = ""
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD


_REGISTRY: Dict[str, ModelInfo] = {}
# Other names of zoo architectures (timm's): alias -> its own ModelInfo, kept out of list_models().
_ALIASES: Dict[str, ModelInfo] = {}


def register_model(info: ModelInfo) -> ModelInfo:
    """Add a named model (its name must be new)."""
    if info.name in _REGISTRY:
        raise ValueError(f"model {info.name!r} is already registered")
    _REGISTRY[info.name] = info
    return info


def list_models() -> List[str]:
    """Names accepted by :func:`mvit.create_model` and ``MVIT.ARCH``."""
    return sorted(_REGISTRY)


def register_alias(name: str, target: str, num_params: int, gflops: float, **overrides: Any) -> ModelInfo:
    """Another name for zoo model ``target`` with MViTConfig ``overrides`` (e.g. a class token); ``num_params`` and
    ``gflops`` are those of the resulting architecture."""
    if name in _REGISTRY or name in _ALIASES:
        raise ValueError(f"model {name!r} is already registered")
    base = _REGISTRY[target]
    build = base.build_config
    info = dataclasses.replace(
        base,
        name=name,
        build_config=lambda: build().replace(**overrides),
        num_params=num_params,
        gflops=gflops,
        source=f"{target} (timm's name{', with ' + ', '.join(f'{k}={v}' for k, v in overrides.items()) if overrides else ''})",
    )
    _ALIASES[name] = info
    return info


def list_aliases() -> Dict[str, str]:
    """timm's names accepted beside :func:`list_models`: alias -> the zoo model it is (possibly with overrides,
    see ``model_info(alias).source``)."""
    return {name: info.source.split(" ", 1)[0] for name, info in sorted(_ALIASES.items())}


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model or alias."""
    return name in _REGISTRY or name in _ALIASES


def model_info(name: str) -> ModelInfo:
    """The metadata of a registered model.

    Raises:
        ConfigError: unknown name, with the closest registered names.
    """
    if name in _ALIASES:
        return _ALIASES[name]
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint} (mvit.list_models() names all {len(_REGISTRY)})")
    return _REGISTRY[name]


def _image(depths, embed_dim=96, num_heads=1, **kw) -> Callable[[], MViTConfig]:
    return lambda: MViTConfig.from_stages(depths, embed_dim=embed_dim, num_heads=num_heads, **kw)


def _video(depths, frames, size=224, embed_dim=96, num_heads=1, **kw) -> Callable[[], MViTConfig]:
    return lambda: MViTConfig.from_stages(
        depths,
        input_size=(frames, size, size),
        q_stride=(1, 2, 2),
        kv_stride_adaptive=(1, 8, 8),
        embed_dim=embed_dim,
        num_heads=num_heads,
        patch_kernel=(3, 7, 7),
        patch_stride=(2, 4, 4),
        patch_padding=(1, 3, 3),
        cls_embed_on=True,
        rel_pos_temporal=True,
        num_classes=400,
        head_dropout=0.5,
        **kw,
    )


_IN1K = "facebookresearch/mvit (ImageNet-1k, 224)"
_K400 = "facebookresearch/SlowFast (Kinetics-400)"
for _info in (
    ModelInfo("mvitv2_t", _image((1, 2, 5, 2), drop_path_rate=0.1), "imagenet-1k", 24_173_320, 4.704, 82.3, _IN1K),
    ModelInfo("mvitv2_s", _image((1, 2, 11, 2), drop_path_rate=0.1), "imagenet-1k", 34_870_216, 6.998, 83.6, _IN1K),
    ModelInfo("mvitv2_b", _image((2, 3, 16, 3), drop_path_rate=0.3), "imagenet-1k", 51_472_744, 10.159, 84.4, _IN1K),
    ModelInfo(
        "mvitv2_l",
        _image((2, 6, 36, 4), embed_dim=144, num_heads=2, dim_mul_in_att=False, drop_path_rate=0.5),
        "imagenet-1k",
        217_992_952,
        43.869,
        85.3,
        _IN1K + "; 87.5 with ImageNet-21k pre-training",
    ),
    ModelInfo(
        "mvitv2_h",
        _image((4, 8, 60, 8), embed_dim=192, num_heads=3, cls_embed_on=True, drop_path_rate=0.8),
        "imagenet-1k",
        666_879_912,
        120.64,
        88.0,
        "facebookresearch/mvit (ImageNet-21k pre-training, class token, as timm mvitv2_huge_cls)",
    ),
    ModelInfo(
        "mvitv2_s_16x4",
        _video((1, 2, 11, 2), frames=16, drop_path_rate=0.2),
        "kinetics-400",
        34_537_744,
        64.457,
        81.0,
        _K400,
        KINETICS_MEAN,
        KINETICS_STD,
    ),
    ModelInfo(
        "mvitv2_b_32x3",
        _video((2, 3, 16, 3), frames=32, drop_path_rate=0.3),
        "kinetics-400",
        51_230_128,
        225.170,
        82.9,
        _K400,
        KINETICS_MEAN,
        KINETICS_STD,
    ),
    ModelInfo(
        "mvitv2_l_40x3",
        _video((2, 6, 36, 4), frames=40, size=312, embed_dim=144, num_heads=2, drop_path_rate=0.75),
        "kinetics-400",
        213_390_112,
        2828.101,
        86.1,
        _K400 + ", ImageNet-21k pre-training, 312 px",
        IMAGENET_MEAN,
        IMAGENET_STD,
    ),
):
    register_model(_info)

# timm's names (timm.models.mvitv2), same architectures: parameters (1000 classes) as timm.create_model counts them
# (tests/core/test_timm_contract.py checks each), fvcore GFLOPs of timm's model at 224. The class-token models add the
# pooled q to the class token too, as timm's (and the official image repo's) *_cls weights expect.
_CLS = dict(cls_embed_on=True, residual_pooling_cls=True)
register_alias("mvitv2_tiny", "mvitv2_t", 24_173_320, 4.704)
register_alias("mvitv2_small", "mvitv2_s", 34_870_216, 6.998)
register_alias("mvitv2_base", "mvitv2_b", 51_472_744, 10.159)
register_alias("mvitv2_large", "mvitv2_l", 217_992_952, 43.869)
register_alias("mvitv2_small_cls", "mvitv2_s", 34_870_312, 7.038, **_CLS)
register_alias("mvitv2_base_cls", "mvitv2_b", 51_472_840, 10.218, **_CLS)
register_alias("mvitv2_large_cls", "mvitv2_l", 213_635_512, 42.151, dim_mul_in_att=True, **_CLS)
register_alias("mvitv2_huge_cls", "mvitv2_h", 666_879_912, 120.639, residual_pooling_cls=True)
