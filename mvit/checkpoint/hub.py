"""Downloading released weights into torch.hub's cache, verified, never half-written.

A file lives at ``$TORCH_HOME/hub/checkpoints/<the URL's own file name>`` (torch's convention, shared with
torchvision and timm): when it is there it is used without any network. Otherwise it is fetched with a tqdm
progress bar into a temporary file beside it, checked (length against ``Content-Length``, sha256 where the
publisher states one) and renamed only then, so an interrupted or corrupt download is never used.

A file already in the cache is checked once against its published sha256 (where one is published): the result
is remembered beside it in ``<file>.sha256-ok`` (size, modification time, digest), so a file that changes is
checked again and an unchanged one is not hashed on every load.

``detectron2://<path>`` (detectron2's model-zoo URLs, as its MViTv2 configs name their ImageNet weights) resolves
through the same cache: a file the registry knows by name comes from its registered URL, any other from
detectron2's own host.

``MVIT_WEIGHTS_MIRROR`` redirects downloads to a mirror that serves the same file names, e.g. a folder
served with ``python -m http.server`` (``MVIT_WEIGHTS_MIRROR=http://127.0.0.1:8000``).

Written here rather than with ``torch.hub.download_url_to_file``: that accepts a body shorter than its
``Content-Length`` (``http.client`` reports such an early end as a normal end) and names no cache path in
its errors.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

import torch

from ..errors import CheckpointError
from . import verify
from .verify import verify_cached

__all__ = [
    "DETECTRON2_PREFIX",
    "MIRROR_ENV",
    "ZOO_PREFIX",
    "cache_path",
    "download",
    "resolve_checkpoint",
    "source_url",
    "verify_cached",
]

MIRROR_ENV = "MVIT_WEIGHTS_MIRROR"
ZOO_PREFIX = "zoo:"
DETECTRON2_PREFIX = "detectron2://"
_DETECTRON2_HOST = "https://dl.fbaipublicfiles.com/detectron2/"  # detectron2's ModelCatalog S3 prefix
_CHUNK = 1 << 20


def cache_path(url: str) -> str:
    """Where the file of ``url`` lives in torch.hub's cache (whether or not it is there yet)."""
    name = os.path.basename(urllib.parse.urlparse(url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", name)


def source_url(url: str) -> str:
    """``url``, or the same file name on the mirror named by ``$MVIT_WEIGHTS_MIRROR``."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return url
    return mirror.rstrip("/") + "/" + os.path.basename(urllib.parse.urlparse(url).path)


def download(url: str, sha256: Optional[str] = None, progress: bool = True, timeout: float = 60.0) -> str:
    """The local path of ``url``'s file: the cached copy, or a verified download into the cache.

    Args:
        url: the publisher's URL (its file name names the cached file).
        sha256: the full digest or a prefix of it (as in torchvision's and OpenMMLab's file names); checked
            after a download.
        progress: show a tqdm progress bar.

    Raises:
        CheckpointError: unreachable / offline (names the URL and the cache path where the file may be
            placed by hand), a short body, or a checksum mismatch (nothing is left in the cache).
    """
    dst = cache_path(url)
    if os.path.isfile(dst):
        if sha256:
            verify_cached(dst, sha256, url)
        return dst
    src = source_url(url)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(dst) + ".", suffix=".partial", dir=os.path.dirname(dst))
    try:
        with os.fdopen(fd, "wb") as out:
            received, expected = _fetch(src, out, progress, timeout, dst)
            out.flush()
            os.fsync(out.fileno())
        if expected is not None and received != expected:
            raise CheckpointError(
                f"download of {src} ended after {received} of {expected} bytes; run again, or place the file at {dst}"
            )
        if sha256:
            actual = verify.sha256_of(tmp)
            if not actual.startswith(sha256.lower()):
                raise CheckpointError(
                    f"{src}: sha256 {actual[: max(len(sha256), 8)]}... does not match the published {sha256}; "
                    f"the file was discarded (a mirror serving another file? place the right file at {dst})"
                )
        os.replace(tmp, dst)
        if sha256:
            verify.remember_verified(dst, actual)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dst


def _fetch(src: str, out, progress: bool, timeout: float, dst: str) -> tuple[int, Optional[int]]:
    """Stream ``src`` into ``out``; returns (bytes received, Content-Length or None)."""
    from tqdm.auto import tqdm

    request = urllib.request.Request(src, headers={"User-Agent": "mvit"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) URLs of the registry
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise CheckpointError(
            f"cannot download {src} ({reason}); offline? place the file at {dst} and run again"
        ) from None
    with response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        received = 0
        with tqdm(
            total=expected,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            disable=not progress,
            desc=os.path.basename(dst),
        ) as bar:
            try:
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
            except OSError as err:  # connection reset or timeout mid-way
                raise CheckpointError(
                    f"download of {src} broke off after {received} bytes ({err}); run again, or place the file at {dst}"
                ) from None
    return received, expected


def resolve_checkpoint(spec: str, progress: bool = True) -> str:
    """A local path for a checkpoint given as a path, an ``http(s)://`` URL, ``zoo:<weights tag>``,
    ``detectron2://<path>`` or ``hf-hub:<repo>`` (its ``model.safetensors``, :mod:`mvit.checkpoint.hf_hub`).

    URLs, zoo tags and detectron2 URLs are downloaded into (or found in) torch.hub's cache, verified where a
    sha256 is published; other paths (local, or any iopath path) are returned unchanged.
    """
    from ..models.weights import get_weights, list_weights

    if spec.startswith(ZOO_PREFIX):
        weights = get_weights(spec[len(ZOO_PREFIX) :])
        return download(weights.url, weights.sha256, progress=progress)
    if spec.startswith(DETECTRON2_PREFIX):
        # The same file as a registered release (MViTv2_T_in1k.pyth, ...): its registered URL and checks.
        name = os.path.basename(spec)
        for tag in list_weights():
            weights = get_weights(tag)
            if weights.file_name == name:
                return download(weights.url, weights.sha256, progress=progress)
        return download(_DETECTRON2_HOST + spec[len(DETECTRON2_PREFIX) :], progress=progress)
    if spec.startswith("hf-hub:"):
        from .hf_hub import hf_download

        return hf_download(spec[len("hf-hub:") :])
    if spec.startswith(("http://", "https://")):
        return download(spec, progress=progress)
    return spec
