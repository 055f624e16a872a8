"""Command-line helpers shared by the entry points (``tools/*.py``, ``projects/*/train_net.py``)."""

from __future__ import annotations

import argparse
import contextlib
from typing import Iterator, NoReturn

from ..errors import ConfigError, UserError, report

__all__ = ["ArgumentParser", "model_argument"]


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
