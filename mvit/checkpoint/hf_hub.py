"""The same released weights from the Hugging Face hub: timm's releases (``timm/mvitv2_tiny.fb_in1k``, ...).

timm republished the official ImageNet files on the hub as ``model.safetensors`` in timm's key layout, which
:mod:`mvit.checkpoint.formats` converts. Only that file is ever fetched: safetensors hold tensors, no pickle.
Downloads go through ``huggingface_hub`` (optional: ``pip install huggingface_hub``) into its own cache, shared
with timm and transformers; ``HF_ENDPOINT`` (read when a file is fetched) names another hub or a mirror.

Checks as for the publishers' URLs: the hub names an LFS file's blob by its sha256, which the cached blob is
checked against once (:func:`mvit.checkpoint.verify.verify_cached`).
"""

from __future__ import annotations

import os
import re
from typing import Optional

from ..errors import CheckpointError
from .verify import verify_cached

__all__ = ["HF_FILENAME", "HF_PREFIX", "hf_download"]

HF_PREFIX = "hf-hub:"
HF_FILENAME = "model.safetensors"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def hf_download(repo_id: str, filename: str = HF_FILENAME) -> str:
    """The local path of ``filename`` of the hub repository ``repo_id`` (cached, or downloaded and checked).

    Raises:
        CheckpointError: huggingface_hub is not installed, or the file cannot be fetched (offline, no such
            repository or file), in one line naming the repository and the file; a cached blob that does not
            match its sha256.
    """
    if not filename.endswith(".safetensors"):
        raise CheckpointError(f"hf-hub:{repo_id}/{filename}: only safetensors files are loaded from the hub")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise CheckpointError(f"hf-hub:{repo_id} needs huggingface_hub: pip install huggingface_hub") from None
    endpoint = os.environ.get("HF_ENDPOINT", "").strip() or None
    try:  # a cached copy is used without asking the hub (released weights do not change), as for URLs
        path = hf_hub_download(repo_id, filename, endpoint=endpoint, local_files_only=True)
    except Exception:  # noqa: BLE001 - not in the cache (LocalEntryNotFoundError, or a broken cache entry)
        path = _fetch(repo_id, filename, endpoint)
    blob = os.path.realpath(path)
    if _SHA256.fullmatch(os.path.basename(blob)):  # an LFS file: its blob is named by its sha256
        verify_cached(blob, os.path.basename(blob), f"hf-hub:{repo_id}/{filename}")
    return path


def _fetch(repo_id: str, filename: str, endpoint: Optional[str]) -> str:
    """Download through huggingface_hub (which retries an unreachable hub for about 20 s before giving up)."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo_id, filename, endpoint=endpoint)
    except Exception as err:  # noqa: BLE001 - huggingface_hub raises many kinds (HTTP, offline, not found, OS)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"cannot fetch {filename} of hf-hub:{repo_id} from {endpoint or 'https://huggingface.co'} "
            f"({type(err).__name__}: {reason}); offline? run once online, or use the publisher's URL "
            f"(unset MVIT_WEIGHTS_SOURCE)"
        ) from None
