"""The one error family of the framework: a user's mistake is reported as one line and exit code 2.

Every project and tool raises a :class:`UserError` kind for bad input (a config key, a data file, a
checkpoint, a command-line value) with a message that names the file, line, key or field. Entry points run
their ``main`` through :func:`run_cli`, which prints ``error: <message>`` and exits 2 instead of a traceback.
This module imports nothing but the standard library, so any layer can raise these without side effects.
"""

from __future__ import annotations

import re
import sys
from typing import Callable, NoReturn, Optional

__all__ = [
    "USER_ERROR_EXIT_CODE",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "UserError",
    "report",
    "run_cli",
]

USER_ERROR_EXIT_CODE = 2


# torch's DataLoader re-raises a worker's exception as ``type(err)("Caught ... Original Traceback ...")``.
_WORKER_WRAPPER = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


class UserError(ValueError):
    """Input the user can fix (files, keys, flags, data); reported as one line without a traceback.

    An error raised in a data-loader worker keeps its own message when torch re-raises it in the main process
    (torch would otherwise prefix it with "Caught ... in DataLoader worker process N" and the traceback).
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str) and _WORKER_WRAPPER.match(args[0]):
            # The traceback ends with "<module>.<ClassName>: <message>" (any earlier one is a chained cause).
            own = rf"^(?:[\w.]+\.)?{re.escape(type(self).__qualname__)}: (.*)$"
            found = re.findall(own, args[0], re.MULTILINE)
            if found:
                args = (found[-1],)
        super().__init__(*args)


class ConfigError(UserError):
    """A config file, key or override that cannot be used; the message names the file and key."""


class DataError(UserError):
    """A data set, annotation file or sample that cannot be used; the message names the file and line/field."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read, has an unknown format or does not fit the model; names the file."""


def report(err: BaseException) -> str:
    """The one line printed for ``err``: its message's first line (or its type when it has none)."""
    # str(KeyError) is the repr of its argument (quoted); its argument is the message.
    text = str(err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 else err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def run_cli(main: Callable[[], Optional[int]]) -> NoReturn:
    """Run a command-line ``main()`` and exit with its code; a :class:`UserError` prints one line, exit 2."""
    try:
        code = main()
    except UserError as err:
        print(f"error: {report(err)}", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR_EXIT_CODE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
