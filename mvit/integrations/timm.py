"""This project's image models in timm's registry: ``import mvit.integrations.timm``, then
``timm.create_model("mvit_mvitv2_t")``: every image zoo model and timm-name alias (``mvit_mvitv2_small_cls``), under
the prefix ``mvit_``.

timm 1.0 has no plugin or entry-point mechanism (a name with a ``/`` is read as a Hugging Face Hub repo), so the
models are registered by importing this module, as timm's own model modules register theirs: one entry point per
name through ``timm.models.register_model`` and ``build_model_with_cfg`` (so ``features_only``, ``pretrained_cfg``
and timm's data config work as for timm's models), with one pretrained config per released weights tag
(``mvit_mvitv2_t.fb_in1k``: the publisher's URL, mean / std, input size, crop). ``pretrained=True`` loads through
this project's download (its cache, checks and one-line errors), not timm's. timm is imported here only: the core
does not need it.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional, Tuple

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg

from ..api import create_model, resolve_config
from ..errors import ConfigError
from ..models import MViT, model_info
from ..models.weights import Weights, get_weights, list_weights
from ..models.zoo import list_aliases, list_models

__all__ = ["PREFIX", "register_timm_models", "timm_names"]

PREFIX = "mvit_"
# timm's registry reads the pretrained configs of a module's entry points from the module's ``default_cfgs``.
default_cfgs: Dict[str, Any] = {}
_REGISTERED: List[str] = []


def _zoo_arch(name: str) -> str:
    """The zoo model of a zoo name or alias."""
    return list_aliases().get(name, name)


def _releases(name: str) -> List[Weights]:
    """Classifier releases of ``name``'s architecture (for an alias, those of its zoo model that load into the same
    architecture: the ImageNet-21k class-token files for the ``*_cls`` aliases), default first."""
    config = resolve_config(name)
    return [
        get_weights(tag)
        for tag in list_weights(_zoo_arch(name), include_detectors=False)
        if resolve_config(tag).replace(num_classes=config.num_classes) == config
    ]


def _pretrained_cfg(name: str, weights: Optional[Weights]) -> Dict[str, Any]:
    """timm's pretrained config of ``name`` with ``weights`` (None: no release)."""
    info, config = model_info(name), model_info(name).build_config()
    if weights is None:
        mean, std, crop, resize, interpolation = info.mean, info.std, config.input_size[-1], 256, "bicubic"
        url, num_classes = "", config.num_classes
    else:
        pre = weights.preprocessing
        mean, std, crop, resize, interpolation = pre.mean, pre.std, pre.crop_size, pre.resize_size, pre.interpolation
        url, num_classes = weights.url, weights.num_classes
    return dict(
        url=url,
        num_classes=num_classes,
        input_size=(config.in_chans, crop, crop),
        pool_size=None,
        crop_pct=crop / resize,
        interpolation=interpolation,
        mean=tuple(mean),
        std=tuple(std),
        first_conv="patch_embed.proj",
        classifier="head.projection",
        fixed_input_size=False,  # position tables are interpolated for other sizes
        license="apache-2.0",
    )


def _mvit(
    name: str,
    tag: Optional[str],
    num_classes: int = 1000,
    in_chans: int = 3,
    global_pool: Optional[str] = None,
    drop_rate: Optional[float] = None,
    img_size: Optional[Any] = None,
    **overrides: Any,
) -> MViT:
    """The model ``build_model_with_cfg`` builds: timm's keywords as MViTConfig fields; the weights of ``tag``."""
    overrides.update(num_classes=num_classes, in_chans=in_chans)
    if drop_rate is not None:
        overrides["head_dropout"] = drop_rate
    if img_size is not None:
        overrides["input_size"] = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if tag is None:
        model = create_model(name, **overrides)
    else:
        # What the release already has is no override (one would make the load non-strict).
        release = resolve_config(tag)
        model = create_model(tag, pretrained=True, **{k: v for k, v in overrides.items() if getattr(release, k) != v})
    if global_pool is not None and global_pool != model.global_pool:
        head = model.head
        model.reset_classifier(model.num_classes, global_pool)  # checks the pooling
        model.head = head  # the classifier as built (pretrained or not)
    return model


def _entry_point(name: str, pretrained: bool = False, **kwargs: Any) -> MViT:
    """timm's entry point of ``PREFIX + name``."""
    tag = None
    if pretrained:
        cfg = resolve_pretrained_cfg(PREFIX + name, kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay"))
        if not cfg.tag:
            tags = [PREFIX + name + "." + w.tag.split(".", 1)[1] for w in _releases(name)]
            raise ConfigError(f"{PREFIX}{name}: no released weights; tags with weights: {', '.join(tags) or 'none'}")
        tag = f"{_zoo_arch(name)}.{cfg.tag}"
    return build_model_with_cfg(
        functools.partial(_mvit, name, tag),
        PREFIX + name,
        pretrained=False,  # loaded by _mvit through this project's download and checks
        feature_cfg=dict(out_indices=kwargs.pop("out_indices", 4), feature_cls="getter"),
        **kwargs,
    )


def _register(name: str) -> str:
    timm_name = PREFIX + name
    releases = _releases(name)
    cfgs: Dict[str, Dict[str, Any]] = {}
    for weights in releases:
        cfgs[f"{timm_name}.{weights.tag.split('.', 1)[1]}"] = _pretrained_cfg(name, weights)
    if not releases:
        cfgs[timm_name] = _pretrained_cfg(name, None)
    default_cfgs.update(generate_default_cfgs(cfgs))
    entry = functools.partial(_entry_point, name)
    # register_model names the entry point by its __name__ and finds its configs in its module's default_cfgs.
    entry.__name__, entry.__module__ = timm_name, __name__
    register_model(entry)
    return timm_name


def register_timm_models() -> Tuple[str, ...]:
    """Register every image zoo model and alias in timm's registry as ``mvit_<name>`` (once); return the names."""
    if not _REGISTERED:
        _REGISTERED.extend(_register(name) for name in _image_models())
    return tuple(_REGISTERED)


def _image_models() -> List[str]:
    """Zoo models and aliases for images (timm's models take (B, C, H, W))."""
    return [n for n in (*list_models(), *list_aliases()) if model_info(n).build_config().ndim == 2]


def timm_names() -> Tuple[str, ...]:
    """The names registered in timm (``mvit_mvitv2_t``, ...)."""
    return register_timm_models()


register_timm_models()
