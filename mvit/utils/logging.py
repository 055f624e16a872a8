"""Logging set-up for training processes: console on rank 0, one log file per rank in ``OUTPUT_DIR``."""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional, TextIO

from tqdm import tqdm

__all__ = ["progress_enabled", "setup_logging"]

_LOGGER_NAMES = ("mvit", "projects", "tools")
_FORMAT = "[%(asctime)s %(levelname).1s %(name)s] %(message)s"
_DATEFMT = "%m/%d %H:%M:%S"


class _TqdmStreamHandler(logging.StreamHandler):
    """Console handler that prints through ``tqdm.write`` so log lines do not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def progress_enabled(rank: int, stream: Optional[TextIO] = None) -> bool:
    """Progress bars only on rank 0 and only when stdout is a terminal (not in log files or CI)."""
    stream = stream if stream is not None else sys.stdout
    return rank == 0 and hasattr(stream, "isatty") and stream.isatty()


def setup_logging(output_dir: Optional[str] = None, rank: int = 0, level: int = logging.INFO) -> logging.Logger:
    """Configure the ``mvit``, ``projects`` and ``tools`` loggers; safe to call again (replaces our handlers).

    Rank 0 logs INFO to stdout and to ``output_dir/log.txt``; other ranks log warnings to stderr and
    everything to ``output_dir/log.rank{r}.txt``.

    Returns:
        The ``mvit`` logger.
    """
    fmt = logging.Formatter(_FORMAT, datefmt=_DATEFMT)
    handlers: list[logging.Handler] = []
    console = _TqdmStreamHandler(sys.stdout if rank == 0 else sys.stderr)
    console.setLevel(level if rank == 0 else logging.WARNING)
    handlers.append(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        name = "log.txt" if rank == 0 else f"log.rank{rank}.txt"
        handlers.append(logging.FileHandler(os.path.join(output_dir, name), mode="a"))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler._mvit_handler = True  # type: ignore[attr-defined]
    for name in _LOGGER_NAMES:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "_mvit_handler", False)]:
            logger.removeHandler(old)
            old.close()
        logger.setLevel(level)
        logger.propagate = False
        for handler in handlers:
            logger.addHandler(handler)
    return logging.getLogger("mvit")
