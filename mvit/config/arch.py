"""The bridge between an experiment config's ``MVIT`` section and :class:`~mvit.models.MViTConfig`.

``cfg`` always means an experiment config (fvcore ``CfgNode``). Its ``MVIT`` section is derived from
:class:`MViTConfig`: one key per field, upper case, with the official name where it differs
(:data:`MVIT_KEY_ALIASES`), plus ``MVIT.ARCH``, a zoo model whose fields the keys set beside it override. A key
left unset (None) takes ARCH's value, or without ARCH the official default (facebookresearch/mvit's
``MVIT.*`` defaults: the field defaults and :data:`OFFICIAL_DEFAULTS`). The fields that describe the input and
the head are read from their own sections (:data:`SECTION_KEYS`).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import re
import typing
from typing import Any, Dict, Tuple, Union

from fvcore.common.config import CfgNode

from ..errors import ConfigError
from ..models.config import MViTConfig
from ..models.zoo import model_info

__all__ = [
    "MVIT_KEY_ALIASES",
    "OFFICIAL_DEFAULTS",
    "SECTION_KEYS",
    "config_from_cfg",
    "mvit_cfg_node",
    "mvit_keys",
    "resolve_arch_keys",
]

# Official ``MVIT.*`` key names that are not the field name in upper case.
MVIT_KEY_ALIASES: Dict[str, str] = {"drop_path_rate": "DROPPATH_RATE"}

# Fields read from other sections; input_size is (NUM_FRAMES, crop, crop) for a 3-D patch kernel, else (crop, crop).
SECTION_KEYS: Dict[str, Tuple[str, ...]] = {
    "input_size": ("DATA.NUM_FRAMES", "DATA.TRAIN_CROP_SIZE"),
    "in_chans": ("DATA.IN_CHANS",),
    "num_classes": ("MODEL.NUM_CLASSES",),
    "head_dropout": ("MODEL.DROPOUT_RATE",),
    "act_checkpoint": ("MODEL.ACT_CHECKPOINT",),
}

# facebookresearch/mvit's defaults where they differ from MViTConfig's (which suit the zoo's from_stages).
OFFICIAL_DEFAULTS: Dict[str, Any] = {"depth": 16, "drop_path_rate": 0.1, "pool_kvq_kernel": (3, 3)}

_FIELDS = {f.name: f for f in dataclasses.fields(MViTConfig)}
_HINTS = typing.get_type_hints(MViTConfig)


def mvit_keys() -> Dict[str, str]:
    """The ``MVIT`` key of every MViTConfig field held by that section (all fields but :data:`SECTION_KEYS`)."""
    return {name: MVIT_KEY_ALIASES.get(name, name.upper()) for name in _FIELDS if name not in SECTION_KEYS}


def mvit_cfg_node() -> CfgNode:
    """The ``MVIT`` section of the default cfg: every key unset (None)."""
    return CfgNode({key: None for key in mvit_keys().values()})


def _cfg_key(name: str) -> str:
    """The cfg key(s) of a field, for messages."""
    return " / ".join(SECTION_KEYS[name]) if name in SECTION_KEYS else f"MVIT.{mvit_keys()[name]}"


def _describe(hint: Any) -> str:
    """A field type as a user reads it: int, number, bool, string, [X, ...]."""
    names = {bool: "True or False", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    args = [a for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
    if typing.get_origin(hint) is Union:
        return _describe(args[0])
    return f"[{_describe(args[0]).removeprefix('an ').removeprefix('a ')}, ...]"


class _Mismatch(Exception):
    """A cfg value that does not fit its field's type."""


def _convert(value: Any, hint: Any) -> Any:
    """``value`` as the field's type: lists become tuples, [] of an Optional field None (the official "off")."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:  # Optional[X]
        if value is None or (isinstance(value, (list, tuple)) and not value):
            return None
        return _convert(value, next(a for a in args if a is not type(None)))
    if origin in (tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return tuple(_convert(v, args[0]) for v in value)
    checks = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }
    if hint in checks and not checks[hint](value):
        raise _Mismatch
    return value


def _check(value: Any, hint: Any, key: str) -> Any:
    """A value read from the cfg key ``key``, converted to the field's type, or a ConfigError naming the key."""
    try:
        return _convert(value, hint)
    except _Mismatch:
        raise ConfigError(f"{key}: expected {_describe(hint)}, got {value!r}") from None


def _to_cfg(value: Any) -> Any:
    """A field value as a cfg value: tuples become lists, as a yaml writes them."""
    if isinstance(value, (list, tuple)):
        return [_to_cfg(v) for v in value]
    return value


def _arch_fields(cfg: CfgNode) -> Dict[str, Any]:
    """Values of the ``MVIT`` fields before the cfg's own keys: ARCH's model, or the official defaults."""
    arch = cfg.MVIT.get("ARCH") or ""
    if arch:
        try:
            base = model_info(arch).build_config()
        except ConfigError as err:
            raise ConfigError(f"MVIT.ARCH: {err}") from None
        return {name: getattr(base, name) for name in mvit_keys()}
    return {name: OFFICIAL_DEFAULTS.get(name, _FIELDS[name].default) for name in mvit_keys()}


def _mvit_fields(cfg: CfgNode) -> Dict[str, Any]:
    """Values of the ``MVIT`` fields: each key set in ``cfg`` (checked), the unset ones from :func:`_arch_fields`."""
    values = _arch_fields(cfg)
    for name, key in mvit_keys().items():
        value = cfg.MVIT.get(key)
        if value is not None:
            values[name] = _check(value, _HINTS[name], f"MVIT.{key}")
    return values


def resolve_arch_keys(cfg: CfgNode) -> None:
    """Write every unset ``MVIT`` key of ``cfg`` in place (ARCH's value or the official default), so that a
    loaded cfg spells out the whole architecture; keys that are set are only type-checked.

    Raises:
        ConfigError: unknown ``MVIT.ARCH`` or a value of the wrong type, naming the key.
    """
    values = _mvit_fields(cfg)
    for name, key in mvit_keys().items():
        if cfg.MVIT.get(key) is None:
            # None only occurs for Optional list fields, whose "off" a cfg spells [] (None would read as unset).
            cfg.MVIT[key] = [] if values[name] is None else _to_cfg(values[name])
        elif isinstance(cfg.MVIT[key], tuple):
            # An official file's "(3, 7, 7)" evaluates to a tuple; a cfg holds lists (and dumps them as yaml).
            cfg.MVIT[key] = _to_cfg(cfg.MVIT[key])


def _lookup(cfg: CfgNode, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def config_from_cfg(cfg: CfgNode) -> MViTConfig:
    """The MViTConfig an experiment config describes (the cfg is read, never changed)."""
    values = _mvit_fields(cfg)
    frames, crop = (_lookup(cfg, key) for key in SECTION_KEYS["input_size"])
    if len(values["patch_kernel"]) == 3:
        values["input_size"] = (frames, crop, crop)
    elif frames > 1:
        raise ConfigError(
            f"DATA.NUM_FRAMES={frames} needs a 3-D model, but MVIT.PATCH_KERNEL={list(values['patch_kernel'])} is 2-D"
        )
    else:
        values["input_size"] = (crop, crop)
    for name, keys in SECTION_KEYS.items():
        if name != "input_size":
            values[name] = _lookup(cfg, keys[0])
    try:
        return MViTConfig(**values)
    except (TypeError, ValueError) as err:
        # Name the cfg key, not the field: the user wrote the key.
        raise ConfigError(re.sub(r"MViTConfig\.(\w+)", lambda m: _cfg_key(m.group(1)), str(err))) from None
