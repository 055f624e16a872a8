"""Experiment configs: core defaults, project extensions, yaml files with ``_BASE_``, overrides."""

from __future__ import annotations

import os
from typing import Callable, Iterable, Optional, Sequence

from fvcore.common.config import CfgNode

from ..errors import ConfigError, report
from ..models.build import resolve_arch_keys
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

    ``allow_unknown_keys`` accepts keys of projects that are not loaded; ``MVIT`` stays closed (a typo there
    would silently change the model).

    Raises:
        ConfigError: missing file, unknown key or malformed value, naming the file or key.
    """
    cfg = get_cfg()
    for extend in extensions:
        extend(cfg)
    if allow_unknown_keys:
        cfg.set_new_allowed(True)
        cfg.MVIT.set_new_allowed(False)
    if cfg_file:
        if not os.path.isfile(cfg_file):
            raise ConfigError(f"config file not found: {cfg_file}")
        try:
            cfg.merge_from_file(cfg_file)
        except (KeyError, ValueError, AssertionError, TypeError) as err:
            raise ConfigError(f"{cfg_file}: {report(err)}") from None
    if opts:
        opts = list(opts)
        if len(opts) % 2:
            raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd list: {opts}")
        try:
            cfg.merge_from_list(opts)
        except (KeyError, ValueError, AssertionError, TypeError) as err:
            raise ConfigError(f"command-line override: {report(err)}") from None
    try:
        resolve_arch_keys(cfg)
    except ConfigError as err:
        raise ConfigError(f"{cfg_file}: {err}" if cfg_file else str(err)) from None
    if freeze:
        cfg.freeze()
    return cfg
