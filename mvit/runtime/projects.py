"""Projects that plug into an entry point (``tools/run_net.py`` and ``tools/predict.py`` name theirs).

Importing a project registers its datasets, prediction input loaders or launch targets; every ``add_*_config``
function its package exports extends the config (detectron2's pattern). A project that is not installed is skipped.
"""

from __future__ import annotations

import importlib
import logging
import re
from typing import Callable, Sequence

from fvcore.common.config import CfgNode

__all__ = ["load_projects"]

logger = logging.getLogger(__name__)

_ADD_CONFIG = re.compile(r"^add_\w+_config$")


def load_projects(names: Sequence[str]) -> tuple[list[str], list[Callable[[CfgNode], None]]]:
    """Import the project modules ``names`` (skipping those that are not installed).

    Returns:
        The module names that were imported (to import again in spawned processes) and their config
        extensions, in order.
    """
    loaded, extensions = [], []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and (name == err.name or name.startswith(err.name + ".")):
                logger.debug("project %s is not installed", name)
                continue
            raise
        loaded.append(name)
        extensions += [getattr(module, attr) for attr in sorted(vars(module)) if _ADD_CONFIG.match(attr)]
    return loaded, extensions
