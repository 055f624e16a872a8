"""Experiment configs: core defaults, project extensions, yaml files with ``_BASE_``, overrides."""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

from fvcore.common.config import CfgNode

from ..errors import ConfigError
from .arch import resolve_arch_keys
from .compat import check_foreign_keys, merge_config_file, merge_overrides, register_foreign_keys
from .defaults import get_cfg

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_config"]


def load_config(
    cfg_file: Optional[str] = None,
    opts: Optional[Sequence[str]] = None,
    extensions: Iterable[Callable[[CfgNode], None]] = (),
    freeze: bool = True,
    allow_unknown_keys: bool = False,
) -> CfgNode:
    """Build an experiment config: defaults, then each project ``extension``, then the yaml file
    (its ``_BASE_`` chain first), then ``KEY VALUE`` overrides; last, every unset ``MVIT`` key is written
    (the ``MVIT.ARCH`` model's value, or the official default), so the config names the whole architecture.
    Official MViTv2 / PySlowFast files load unmodified: their keys are accepted, checked or translated by
    :mod:`mvit.config.compat`.

    ``allow_unknown_keys`` accepts keys of projects that are not loaded; ``MVIT`` stays closed (a typo there
    would silently change the model).

    Raises:
        ConfigError: missing file, invalid YAML, unknown key, malformed value, or an official key whose
            value this project does not implement, naming the file (and line) or key.
    """
    cfg = get_cfg()
    for extend in extensions:
        extend(cfg)
    if allow_unknown_keys:
        cfg.set_new_allowed(True)
        cfg.MVIT.set_new_allowed(False)
    # The official MViTv2 / PySlowFast keys we lack: accepted, checked or translated, then removed.
    foreign = register_foreign_keys(cfg)
    if cfg_file:
        merge_config_file(cfg, cfg_file, foreign)
    if opts:
        merge_overrides(cfg, opts, foreign)
    try:
        resolve_arch_keys(cfg)
    except ConfigError as err:
        raise ConfigError(f"{cfg_file}: {err}" if cfg_file else str(err)) from None
    # After the architecture is complete: some official keys translate into MVIT ones (MVIT.PATCH_2D).
    check_foreign_keys(cfg, foreign)
    if freeze:
        cfg.freeze()
    return cfg
