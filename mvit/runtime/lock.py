"""One training run per output folder: ``OUTPUT_DIR/.lock``, held by the run's main process until it exits.

The lock is an ``fcntl.flock`` on the file, and the file holds the owner's host, pid and start time for the
message a second run prints. flock rather than a pid file created with ``O_EXCL``: the kernel (or the NFS
server) drops a flock when its process dies however it dies (``kill -9``, OOM, a preempted SLURM job requeued
on another host), so a crashed run never blocks the next one and no pid has to be trusted across hosts.

A lock file whose flock is still held although its recorded owner is a dead process of this host (an orphaned
child still has the descriptor open) is stale: it is replaced, with a warning.

A file system without flock (Lustre or GPFS mounted without it: ``ENOSYS``, ``EOPNOTSUPP``, ``ENOLCK``) cannot
lock: the run goes on with a warning and the lock file only records the owner.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from typing import Any, Iterator, Optional

from ..errors import UserError

__all__ = ["LOCK_NAME", "OutputDirLock", "OutputDirLocked", "hold_until_exit", "output_dir_lock", "release_held"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
# What flock raises where the file system does not implement it (not: another process holds the lock).
_NO_FLOCK = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOLCK}


class OutputDirLocked(UserError):
    """Another live run holds the output folder; the message names the folder and the owner's host and pid."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class OutputDirLock:
    """The lock of one output folder (see the module docstring). ``acquire`` / ``release``, or a context manager.

    Args:
        directory: the run's output folder (created if missing).
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def owner(self) -> dict[str, Any]:
        """What the lock file says about its owner (``{}`` when it is missing or unreadable)."""
        try:
            with open(self.path) as f:
                info = json.load(f)
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def acquire(self) -> OutputDirLock:
        """Take the lock or raise :class:`OutputDirLocked` naming the folder and the owner."""
        if self._fd is not None:
            return self
        os.makedirs(self.directory, exist_ok=True)
        for _ in range(10):  # retries only when another process replaced the file between open and flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in _NO_FLOCK:
                    logger.warning(
                        "%s: the file system cannot lock files (%s); two runs in this OUTPUT_DIR would not be "
                        "refused: make sure only one runs",
                        self.path,
                        os.strerror(err.errno),
                    )
                    self._fd = fd
                    self._write_owner(fd)
                    return self
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if not self._replace_stale():
                    raise self._refusal() from None
                continue
            if not self._is_current(fd):  # the file we locked was unlinked (released or replaced) meanwhile
                os.close(fd)
                continue
            self._fd = fd
            self._write_owner(fd)
            return self
        raise OutputDirLocked(f"{self.directory}: could not take {self.path}, which keeps being replaced")

    def _is_current(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _write_owner(self, fd: int) -> None:
        previous = self.owner()
        if previous and previous.get("pid") != os.getpid():
            # A released lock leaves no file: this one's run ended without releasing it (killed, crashed).
            logger.warning("%s: taking over the lock of a run that ended (%s)", self.path, _describe(previous))
        info = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)

    def _replace_stale(self) -> bool:
        """Unlink a lock file whose flock is held but whose recorded owner is a dead process of this host."""
        info = self.owner()
        pid = info.get("pid")
        if info.get("host") != socket.gethostname() or not isinstance(pid, int) or _pid_alive(pid):
            return False
        logger.warning("%s: taking over a stale lock (%s is not running)", self.path, _describe(info))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        return True

    def _refusal(self) -> OutputDirLocked:
        info = self.owner()
        who = _describe(info) if info else "another process"
        return OutputDirLocked(
            f"OUTPUT_DIR {self.directory} is in use by another run ({who}); wait for it to end, stop it, or "
            f"choose another OUTPUT_DIR (lock file: {self.path})"
        )

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._is_current(fd):
                os.unlink(self.path)  # unlinked before unlocking: a waiting opener finds it gone and retries
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> OutputDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(info: dict[str, Any]) -> str:
    return f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, started {info.get('started', '?')}"


@contextlib.contextmanager
def output_dir_lock(directory: str, enabled: bool = True) -> Iterator[Optional[OutputDirLock]]:
    """Hold the lock of ``directory`` for the ``with`` block (``enabled=False``, e.g. on ranks > 0: nothing)."""
    if not enabled:
        yield None
        return
    with OutputDirLock(directory) as lock:
        yield lock


_HELD: dict[str, OutputDirLock] = {}


def hold_until_exit(directory: str) -> OutputDirLock:
    """Take the lock of ``directory`` for the rest of this process (for entry points without a ``with`` block)."""
    key = os.path.abspath(directory)
    if key not in _HELD:
        if not _HELD:
            atexit.register(_release_all)
        _HELD[key] = OutputDirLock(directory).acquire()
    return _HELD[key]


def release_held(directory: str) -> None:
    """Release a lock taken by :func:`hold_until_exit` before the process exits (no-op when not held)."""
    lock = _HELD.pop(os.path.abspath(directory), None)
    if lock is not None:
        lock.release()


def _release_all() -> None:
    while _HELD:
        _HELD.popitem()[1].release()
