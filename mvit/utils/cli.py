"""Command-line helpers shared by the entry points (``tools/*.py``, ``projects/*/train_net.py``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from typing import Iterator, NoReturn, Optional, Union

from ..errors import ConfigError, UserError, report

__all__ = ["ArgumentParser", "model_argument", "unwritable_reason"]


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
