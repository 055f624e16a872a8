"""Command-line helpers shared by the entry points (``tools/*.py``, ``projects/*/train_net.py``)."""

from __future__ import annotations

import argparse
from typing import NoReturn

from ..errors import UserError

__all__ = ["ArgumentParser"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are :class:`~mvit.errors.UserError` (one line, exit 2 under ``run_cli``)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message} (see --help)")
