"""Weights download into torch.hub's cache, from a local HTTP server on 127.0.0.1 standing in for the publishers."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest

from mvit.checkpoint.hub import MIRROR_ENV, cache_path, download, resolve_checkpoint
from mvit.errors import CheckpointError
from mvit.models.weights import get_weights

URL = "https://dl.example.org/models/weights_file.pyth"
PAYLOAD = os.urandom(300_000)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD under any path; under /short/ it announces the full length but sends half."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        body = PAYLOAD[: len(PAYLOAD) // 2] if self.path.startswith("/short/") else PAYLOAD
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def _mirror(server, monkeypatch, prefix: str = "") -> None:
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{server.server_port}{prefix}")


def _cache_files(torch_home: Path) -> list[str]:
    folder = torch_home / "hub" / "checkpoints"
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_download_lands_under_the_urls_own_name(server, monkeypatch, torch_home):
    _mirror(server, monkeypatch)
    path = download(URL, sha256=hashlib.sha256(PAYLOAD).hexdigest()[:8], progress=False)
    assert path == str(torch_home / "hub" / "checkpoints" / "weights_file.pyth") == cache_path(URL)
    assert Path(path).read_bytes() == PAYLOAD
    assert server.requests == ["/weights_file.pyth"]
    assert _cache_files(torch_home) == ["weights_file.pyth"]  # no temporary file left


def test_cache_hit_uses_no_network(monkeypatch, torch_home):
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # nothing listens there
    target = Path(cache_path(URL))
    target.parent.mkdir(parents=True)
    target.write_bytes(b"cached")
    assert download(URL, progress=False) == str(target)


def test_checksum_mismatch_keeps_nothing(server, monkeypatch, torch_home):
    _mirror(server, monkeypatch)
    with pytest.raises(CheckpointError, match="does not match the published 00000000"):
        download(URL, sha256="00000000", progress=False)
    assert _cache_files(torch_home) == []


def test_interrupted_download_is_never_used(server, monkeypatch, torch_home):
    _mirror(server, monkeypatch, "/short")
    with pytest.raises(CheckpointError, match=f"after {len(PAYLOAD) // 2} of {len(PAYLOAD)} bytes"):
        download(URL, progress=False)
    assert _cache_files(torch_home) == []


def test_offline_names_the_url_and_the_cache_path(monkeypatch, torch_home):
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")
    with pytest.raises(CheckpointError) as err:
        download(URL, progress=False)
    message = str(err.value)
    assert "http://127.0.0.1:9/weights_file.pyth" in message and cache_path(URL) in message
    assert "\n" not in message


def test_zoo_names_and_urls_resolve_through_the_cache(server, monkeypatch, torch_home):
    _mirror(server, monkeypatch)
    weights = get_weights("mvitv2_t.fb_in1k")
    path = resolve_checkpoint("zoo:mvitv2_t.fb_in1k", progress=False)
    assert os.path.basename(path) == "MViTv2_T_in1k.pyth" == weights.file_name
    assert resolve_checkpoint(weights.url, progress=False) == path  # the same file: a cache hit
    assert server.requests == ["/MViTv2_T_in1k.pyth"]
    assert resolve_checkpoint("/data/local.pyth") == "/data/local.pyth"
