"""Checking a file against its published sha256, once per version of the file.

The result is remembered beside the file in ``<file>.sha256-ok`` (size, modification time, digest), so a file
that changes is checked again and an unchanged one is not hashed on every load. Shared by the URL cache
(:mod:`mvit.checkpoint.hub`) and the Hugging Face hub source (:mod:`mvit.checkpoint.hf_hub`).
"""

from __future__ import annotations

import hashlib
import json
import os

from ..errors import CheckpointError

__all__ = ["VERIFIED_SUFFIX", "remember_verified", "sha256_of", "verify_cached"]

VERIFIED_SUFFIX = ".sha256-ok"
_CHUNK = 1 << 20


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_stamp(path: str) -> dict:
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def remember_verified(path: str, digest: str) -> None:
    """Write ``<path>.sha256-ok``; a cache folder that cannot be written only means hashing again next time."""
    try:
        with open(path + VERIFIED_SUFFIX, "w") as f:
            json.dump({**_file_stamp(path), "sha256": digest}, f)
    except OSError:
        pass


def verify_cached(path: str, sha256: str, source: str = "") -> None:
    """Check a cached file against its published sha256 (a full digest or a prefix), once per version of the file.

    Raises:
        CheckpointError: a mismatch, in one line naming the file and what to do.
    """
    expected = sha256.lower()
    try:
        with open(path + VERIFIED_SUFFIX) as f:
            marker = json.load(f)
        stamp = {k: marker.get(k) for k in ("size", "mtime_ns")}
        if marker.get("sha256", "").startswith(expected) and stamp == _file_stamp(path):
            return
    except (OSError, ValueError, AttributeError):
        pass  # no marker, or an unreadable one: hash the file
    actual = sha256_of(path)
    if not actual.startswith(expected):
        of = f" of {source}" if source else ""
        raise CheckpointError(
            f"{path}: sha256 {actual[: max(len(expected), 8)]}... does not match the published {sha256}{of}; "
            f"the cached file is corrupt or another file: delete it to download it again"
        )
    remember_verified(path, actual)
