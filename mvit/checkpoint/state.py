"""Training-state checkpoints: atomic writes through iopath, and finding the newest valid one to resume from.

A training-state file is a dict (``torch.save``) that loads with ``weights_only=True``::

    {"format": "mvit-train-state", "version": 1,
     "epoch": int, "iter": int,          # iterations completed in ``epoch`` (== iters per epoch: epoch done)
     "step": int,                        # optimizer steps since the start of training
     "model": state_dict, "optimizer": ..., "scaler": ..., "hooks": {name: state}, "rng": {...},
     "cfg": yaml str, "class_names": [str] | None, "metrics": {...}}

The weights are under ``"model"`` (the raw model; the EMA's under ``hooks["ema"]``), so the core's
weight loader reads these files as it reads any ``{"model": state_dict}`` checkpoint.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
from typing import IO, Any, Callable, Iterator, Optional

import torch
from iopath.common.file_io import g_pathmgr as PathManager

from ..errors import CheckpointError

__all__ = [
    "CHECKPOINT_SUFFIX",
    "LAST_NAME",
    "STATE_FORMAT",
    "CheckpointError",
    "atomic_copy",
    "atomic_save",
    "atomic_write",
    "check_finite_weights",
    "checkpoint_dir",
    "find_resume_checkpoint",
    "is_training_state",
    "list_checkpoints",
    "load_training_state",
]

logger = logging.getLogger(__name__)

STATE_FORMAT = "mvit-train-state"
CHECKPOINT_SUFFIX = ".pyth"
LAST_NAME = "last.pyth"
_REQUIRED_KEYS = ("format", "epoch", "iter", "step", "model")


def checkpoint_dir(cfg: Any) -> str:
    """Where training states are written and auto-resume looks: ``OUTPUT_DIR/checkpoints``."""
    return os.path.join(cfg.OUTPUT_DIR, "checkpoints")


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save(obj)`` to ``path`` so that readers see either the old file or the complete new one."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """``write(file)`` into ``path`` so that readers see either the old file or the complete new one.

    The bytes go to a temporary file beside ``path`` (flushed and fsync'ed), which is then renamed over
    ``path``: a process killed at any moment never leaves a partial file under the final name.

    Raises:
        CheckpointError: the file could not be written (a full disk, a file-size limit, no permission); the
            temporary file is removed and a previous file at ``path`` is left as it was.
    """
    directory = os.path.dirname(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        if directory:
            PathManager.mkdirs(directory)
        with PathManager.open(tmp, "wb") as f:
            write(f)
            f.flush()
            if hasattr(f, "fileno"):
                os.fsync(f.fileno())
        _rename(tmp, path)
    except CheckpointError:
        _remove_quietly(tmp)
        raise
    except (OSError, RuntimeError) as err:
        # torch.save reports a failed write as a RuntimeError of its zip writer ("unexpected pos ..."), without
        # the OSError: hence both, and the disk's free space and the file-size limit in the message.
        _remove_quietly(tmp)
        raise CheckpointError(f"could not write {path}: {_write_failure(err, path)}") from err
    except BaseException:
        _remove_quietly(tmp)
        raise


def _rename(tmp: str, path: str) -> None:
    if _is_local(path):
        # iopath's mv refuses to overwrite; os.replace is the atomic rename POSIX guarantees.
        os.replace(PathManager.get_local_path(tmp), PathManager.get_local_path(path))
    else:
        if PathManager.exists(path):
            PathManager.rm(path)
        if not PathManager.mv(tmp, path):
            raise CheckpointError(f"could not move {tmp} to {path}")


def _remove_quietly(path: str) -> None:
    try:
        if PathManager.exists(path):
            PathManager.rm(path)
    except OSError as err:
        logger.warning("could not remove the partial file %s: %s", path, err)


def _write_failure(err: BaseException, path: str) -> str:
    """Why a write failed, in words: the OS error, else the state of the disk and of the file-size limit."""
    reason = (err.strerror or str(err)) if isinstance(err, OSError) else str(err).strip().splitlines()[0]
    if "inline_container" in reason or "PytorchStreamWriter" in reason:  # torch's zip writer: no useful detail
        reason = "the write failed"
    if isinstance(err, OSError) and err.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return f"{reason}; the previous file is unchanged"
    hints = []
    directory = os.path.dirname(os.path.abspath(path))
    if _is_local(path) and os.path.isdir(directory):
        st = os.statvfs(directory)
        hints.append(f"{st.f_bavail * st.f_frsize / 2**20:.1f} MiB free on its filesystem")
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        hints.append(f"file-size limit (ulimit -f) {soft} bytes")
    detail = f" ({', '.join(hints)})" if hints else ""
    return f"{reason}{detail}; the previous file is unchanged"


def _named_tensors(state: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    for key, value in (state or {}).items():
        if isinstance(value, torch.Tensor):
            yield f"{prefix}{key}", value


def check_finite_weights(state: dict[str, Any], path: str) -> None:
    """Refuse to save a training state whose model or EMA weights hold a NaN or an infinity.

    Raises:
        CheckpointError: naming the first non-finite tensor and ``path``, which is not written.
    """
    ema = (state.get("hooks") or {}).get("ema") or {}
    tensors = [*_named_tensors(state.get("model"), "model."), *_named_tensors(ema.get("model"), "ema.")]
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"not writing {path}: weight {name} is not finite (NaN or inf) at epoch {state.get('epoch')} "
                f"iteration {state.get('iter')}; the checkpoints already on disk are unchanged"
            )


def is_training_state(obj: Any) -> bool:
    """True when ``obj`` looks like a dict written by the training engine."""
    return isinstance(obj, dict) and obj.get("format") == STATE_FORMAT and all(k in obj for k in _REQUIRED_KEYS)


def load_training_state(path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training-state file.

    Raises:
        CheckpointError: unreadable (missing, truncated, corrupt) or not a training state.
    """
    try:
        with PathManager.open(path, "rb") as f:
            obj = torch.load(f, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None
    if not is_training_state(obj):
        raise CheckpointError(f"{path}: not a training-state checkpoint (missing {list(_REQUIRED_KEYS)})")
    return obj


def list_checkpoints(directory: str) -> list[str]:
    """Checkpoint files (``*.pyth``, temporary files excluded) in ``directory``, newest first (``last.pyth``, then
    the others by modification time)."""
    if not PathManager.isdir(directory):
        return []
    paths = [os.path.join(directory, name) for name in PathManager.ls(directory) if name.endswith(CHECKPOINT_SUFFIX)]
    # The trainer writes last.pyth first and copies it to the other names: it is the newest state unless damaged.
    if all(_is_local(p) for p in paths):
        paths.sort(
            key=lambda p: (os.path.basename(p) == LAST_NAME, os.stat(PathManager.get_local_path(p)).st_mtime_ns, p)
        )
    else:
        paths.sort(key=lambda p: (os.path.basename(p) == LAST_NAME, p))
    return paths[::-1]


def find_resume_checkpoint(
    directory: str, map_location: str | torch.device = "cpu"
) -> Optional[tuple[str, dict[str, Any]]]:
    """The newest checkpoint in ``directory`` that loads, with its state; ``None`` when there is none.

    A newer file that cannot be read (e.g. truncated by a full disk or a copy) is skipped with a warning in
    favour of the next older one.
    """
    for path in list_checkpoints(directory):
        try:
            return path, load_training_state(path, map_location)
        except CheckpointError as err:
            logger.warning("skipping checkpoint: %s", err)
    return None


def atomic_copy(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` through a temporary file and a rename (same guarantee as :func:`atomic_save`)."""
    tmp = f"{dst}.tmp{os.getpid()}"
    try:
        if not PathManager.copy(src, tmp, overwrite=True):
            raise CheckpointError(f"could not copy {src} to {tmp}")
        _rename(tmp, dst)
    except OSError as err:
        _remove_quietly(tmp)
        raise CheckpointError(f"could not write {dst}: {_write_failure(err, dst)}") from err
    except BaseException:
        _remove_quietly(tmp)
        raise
