"""Command-line helpers shared by the entry points (``tools/*.py``, ``projects/*/train_net.py``)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import tempfile
from types import ModuleType
from typing import Iterator, NoReturn, Optional, Union

from ..errors import ConfigError, UserError, report

__all__ = ["ArgumentParser", "import_script", "model_argument", "unwritable_reason"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are :class:`~mvit.errors.UserError` (one line, exit 2 under ``run_cli``)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message} (see --help)")


@contextlib.contextmanager
def model_argument(what: str) -> Iterator[None]:
    """Report an unknown zoo name (``KeyError``) or config field (``TypeError``) given as ``what`` as a ConfigError."""
    try:
        yield
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{what}: {report(err)}") from None


def unwritable_reason(folder: Union[str, os.PathLike], create: bool = False) -> Optional[str]:
    """Why new files cannot be written into ``folder`` (``None`` when they can), found by writing one: permission
    bits say yes to root and on read-only mounts. ``create`` makes the folder and its parents first. For tools that
    should stop before a download or a long computation whose result they could not save."""
    try:
        if create:
            os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return err.strerror or str(err)
    return None


def import_script(path: Union[str, os.PathLike], name: Optional[str] = None, reuse: bool = True) -> ModuleType:
    """Import a script by path (``tools/`` is not a package, and scripts do not edit ``sys.path``).

    The module is registered in ``sys.modules`` as ``name`` (default: ``_mvit_script_<stem>``), so its dataclasses
    pickle; ``reuse`` returns a module already imported under that name instead of running the file again.
    """
    name = name or "_mvit_script_" + os.path.splitext(os.path.basename(os.fspath(path)))[0]
    if reuse and name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.fspath(path))
    if spec is None or spec.loader is None:
        raise UserError(f"cannot import {os.fspath(path)}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
