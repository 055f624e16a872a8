"""One way to build a model: :func:`create_model` from a zoo name, a weights tag, a yaml file, an MViTConfig or a
cfg (and :func:`resolve_config`, its architecture). Above the models, configs and checkpoints it joins, so that
:mod:`mvit.models` imports none of them; ``mvit.create_model`` is the public path.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

import torch
from fvcore.common.config import CfgNode

from .checkpoint import load_checkpoint, read_checkpoint
from .checkpoint.hf_hub import HF_PREFIX
from .checkpoint.pretrained import load_pretrained
from .config import load_config
from .config.arch import config_from_cfg
from .config.hints import close_config_files, did_you_mean
from .errors import ConfigError, report
from .models.config import MViTConfig
from .models.mvit import MViT
from .models.weights import Weights, get_weights, is_weights, list_weights
from .models.zoo import is_model, model_info

__all__ = ["ModelSpec", "create_model", "resolve_config", "stored_config"]

# Weights files whose model config this project stores (see :func:`stored_config`).
CHECKPOINT_SUFFIXES = (".pyth", ".pth", ".pt", ".safetensors")

ModelSpec = Union[str, os.PathLike, MViTConfig, CfgNode]


def resolve_config(spec: ModelSpec, **overrides: Any) -> MViTConfig:
    """The :class:`MViTConfig` of a model spec, with field overrides.

    Args:
        spec: a zoo name (``mvit.list_models()``), a weights tag (``mvit.models.weights.list_weights()``: the
            zoo model as released, e.g. with a 21k-class head), the path of an experiment yaml, an :class:`MViTConfig`
            (copied), an experiment config ``cfg`` (fvcore ``CfgNode``), or a checkpoint this project wrote
            (``.pyth`` / ``.pth`` / ``.pt`` / ``.safetensors``: the architecture stored in it, see
            :func:`stored_config`). A zoo name wins over a file of the same name.
        **overrides: :class:`MViTConfig` fields, e.g. ``num_classes=10``.

    Raises:
        ConfigError: unknown zoo name (with the closest names), missing yaml file, or a bad config value.
        TypeError: an override that is not an MViTConfig field.
    """
    if isinstance(spec, MViTConfig):
        config = spec
    elif isinstance(spec, CfgNode):
        config = config_from_cfg(spec)
    elif isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if _is_checkpoint_path(text):
            config = stored_config(text)
        elif not is_model(text) and os.path.isfile(text):
            cfg = load_config(text, allow_unknown_keys=True)
            try:
                config = config_from_cfg(cfg)
            except ConfigError as err:
                raise ConfigError(f"{text}: {err}") from None
        elif not is_model(text) and (text.endswith((".yaml", ".yml")) or os.path.sep in text or "/" in text):
            raise ConfigError(f"config file not found: {text}{did_you_mean(close_config_files(text))}")
        elif is_weights(text):  # a release: its zoo model with the release's head and class token
            weights = get_weights(text)
            config = model_info(weights.arch).build_config().replace(**weights.overrides)
        elif is_model(_arch(text)) and text != _arch(text):
            get_weights(text)  # "mvitv2_t.fb_in1kk": an unknown tag of a zoo model, with the closest tags
        else:
            config = model_info(text).build_config()  # an unknown name raises, with the closest names
    else:
        raise TypeError(f"expected a zoo name, a yaml path, an MViTConfig or a CfgNode, got {type(spec).__name__}")
    return config.replace(**overrides)


def create_model(
    spec: ModelSpec,
    *,
    pretrained: Union[bool, str] = False,
    checkpoint: Optional[str] = None,
    progress: bool = True,
    **overrides: Any,
) -> MViT:
    """Build a model from a zoo name, a weights tag, a yaml path, an :class:`MViTConfig` or an experiment config.

    Args:
        spec: e.g. "mvitv2_t", "mvitv2_b.fb_in21k" (a weights tag: the zoo model with that release's head and
            class token), "configs/IN1K/MVITv2_B.yaml", ``MViTConfig(...)`` or a ``cfg`` from
            :func:`mvit.config.load_config`, or a checkpoint this project wrote ("runs/x/checkpoints/last.pyth":
            its stored architecture, its weights loaded strictly; see :func:`resolve_config`).
        pretrained: ``True`` loads the released weights of ``spec`` (its tag, or the zoo model's default
            release, see :func:`mvit.models.weights.list_weights`); a tag string names the release;
            ``"hf-hub:timm/mvitv2_tiny.fb_in1k"`` takes the same release from timm's safetensors copy on the
            Hugging Face hub (needs huggingface_hub). The file comes from the cache, downloaded (verified) when it
            is not there; ``$MVIT_WEIGHTS_SOURCE=hf`` takes every release from the hub where it is there.
        checkpoint: weights in any format ``mvit.checkpoint`` reads (official .pyth, PySlowFast, mmpretrain,
            timm, torchvision, detectron2 backbone, this project's, safetensors), a URL or ``zoo:<tag>``;
            detected automatically, loaded strictly.
        progress: show a progress bar while downloading.
        **overrides: :class:`MViTConfig` fields, e.g. ``num_classes=10``, ``input_size=(256, 256)``. With
            pretrained weights they make the load non-strict: what no longer fits (a head of another size) is
            left new and reported, rel-pos tables and position embeddings are resized.

    Returns:
        :class:`MViT`; in eval mode it returns logits (no softmax).

    Raises:
        ConfigError: an unknown name or tag, a tag of another model, or both ``pretrained`` and ``checkpoint``.
        CheckpointError: the weights cannot be downloaded, read or loaded (names the file).
    """
    weights = _pretrained_weights(spec, pretrained)
    source = "hf" if isinstance(pretrained, str) and pretrained.startswith(HF_PREFIX) else None
    if weights is not None and checkpoint is not None:
        raise ConfigError("create_model: pass either pretrained= or checkpoint=, not both")
    if weights is not None:
        spec = weights.tag
    # A checkpoint written by this project names its architecture: build that, then load the file itself.
    from_file = checkpoint is None and isinstance(spec, (str, os.PathLike)) and _is_checkpoint_path(os.fspath(spec))
    if from_file:
        checkpoint = os.fspath(spec)
    strict = (checkpoint is not None and not (from_file and overrides)) or (weights is not None and not overrides)
    model = _build(resolve_config(spec, **overrides), skip_init=strict)
    if weights is not None:
        load_pretrained(model, weights, strict=strict, progress=progress, source=source)
    elif checkpoint is not None:
        load_checkpoint(model, checkpoint, strict=strict)
    return model


def _is_checkpoint_path(text: str) -> bool:
    return text.endswith(CHECKPOINT_SUFFIXES) and not is_model(text)


def stored_config(path: str) -> MViTConfig:
    """The architecture a checkpoint of this project stores: the model config of a weights file
    (:func:`mvit.checkpoint.save_weights`, ``tools/convert_checkpoint.py --model``) or the experiment config of a
    training checkpoint.

    Raises:
        CheckpointError: the file cannot be read.
        ConfigError: the file holds weights without a config (another project's): name the architecture.
    """
    obj = read_checkpoint(path)
    try:
        if isinstance(obj.get("model_config"), dict):
            return MViTConfig(**obj["model_config"])
        if isinstance(obj.get("cfg"), str):  # a training checkpoint: its experiment config, every MVIT key set
            return config_from_cfg(CfgNode.load_cfg(obj["cfg"]))
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise ConfigError(f"{path}: the model config stored in it cannot be used: {report(err)}") from None
    raise ConfigError(
        f"{path}: holds weights without a model config (not written by this project); name the architecture: "
        f"create_model(<zoo name or yaml>, checkpoint={path!r})"
    )


def _build(config: MViTConfig, skip_init: bool) -> MViT:
    """``MViT(config)``; with ``skip_init`` (a strict load will overwrite every tensor of its state dict) without
    the random initialisation, which takes seconds for the L and H models."""
    if not skip_init:
        return MViT(config)
    with torch.device("meta"):
        model = MViT(config)
    if set(dict(model.named_buffers())) - set(model.state_dict()):  # a buffer no file holds: initialise normally
        return MViT(config)
    return model.to_empty(device="cpu")


def _pretrained_weights(spec: ModelSpec, pretrained: Union[bool, str]) -> Optional[Weights]:
    """The release ``pretrained`` asks for, checked against the model ``spec`` names."""
    if not pretrained:
        return None
    if not isinstance(spec, (str, os.PathLike)) or not (is_model(_arch(spec)) or is_weights(os.fspath(spec))):
        raise ConfigError(f"pretrained= needs a zoo name or weights tag, got {spec!r} (use checkpoint= for a file)")
    spec = os.fspath(spec)
    tag = pretrained if isinstance(pretrained, str) else spec
    weights = _hf_release(tag) if tag.startswith(HF_PREFIX) else get_weights(tag)
    if weights.arch != _arch(spec):
        raise ConfigError(f"weights {weights.tag} are for {weights.arch}, not {_arch(spec)}")
    return weights


def _hf_release(spec: str) -> Weights:
    """The registered release that ``hf-hub:<repo>`` republishes."""
    repo = spec[len(HF_PREFIX) :]
    for tag in list_weights():
        if get_weights(tag).hf_hub_id == repo:
            return get_weights(tag)
    known = ", ".join(HF_PREFIX + w.hf_hub_id for w in map(get_weights, list_weights()) if w.hf_hub_id)
    raise ConfigError(f"pretrained={spec!r}: not a release of the registry on the hub; known: {known}")


def _arch(spec: Any) -> str:
    """The zoo name of a name or weights tag ("mvitv2_t.fb_in1k" -> "mvitv2_t")."""
    return os.fspath(spec).split(".", 1)[0] if isinstance(spec, (str, os.PathLike)) else ""
