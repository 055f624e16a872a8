"""Weights download into torch.hub's cache, from a local HTTP server on 127.0.0.1 standing in for the publishers."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import pytest

from mvit.checkpoint import verify
from mvit.checkpoint.hub import MIRROR_ENV, cache_path, download, resolve_checkpoint
from mvit.errors import CheckpointError
from mvit.models.weights import get_weights, list_weights

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
    assert _cache_files(torch_home) == ["weights_file.pyth", "weights_file.pyth.sha256-ok"]  # no temporary file


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


# ----------------------------------------------------------------- a cached file is checked once against its sha256
def _cached(data: bytes = PAYLOAD) -> Path:
    target = Path(cache_path(URL))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def _count_hashing(monkeypatch) -> list:
    calls = []
    real = verify.sha256_of
    monkeypatch.setattr(verify, "sha256_of", lambda path: calls.append(path) or real(path))
    return calls


def test_a_cached_file_is_hashed_once(monkeypatch, torch_home):
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # offline: the cached file is used
    target = _cached()
    calls = _count_hashing(monkeypatch)
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    for _ in range(3):
        assert download(URL, sha256=digest[:8], progress=False) == str(target)
    assert calls == [str(target)]
    assert json.loads(Path(str(target) + ".sha256-ok").read_text())["sha256"] == digest
    # A changed file (here: one more byte) is checked again, and refused.
    target.write_bytes(PAYLOAD + b"x")
    with pytest.raises(CheckpointError):
        download(URL, sha256=digest[:8], progress=False)
    assert len(calls) == 2


def test_a_corrupt_cached_file_is_one_line_naming_it(monkeypatch, torch_home):
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")
    target = _cached(PAYLOAD[: len(PAYLOAD) // 2])  # e.g. a copy that stopped half-way
    with pytest.raises(CheckpointError) as err:
        download(URL, sha256=hashlib.sha256(PAYLOAD).hexdigest()[:8], progress=False)
    message = str(err.value)
    assert message.startswith(f"{target}: sha256 ") and "delete it to download it again" in message
    assert URL in message and "\n" not in message
    assert not Path(str(target) + ".sha256-ok").exists()


def test_a_freshly_downloaded_file_is_not_hashed_again(server, monkeypatch, torch_home):
    _mirror(server, monkeypatch)
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    download(URL, sha256=digest, progress=False)
    calls = _count_hashing(monkeypatch)
    download(URL, sha256=digest, progress=False)
    assert calls == [] and server.requests == ["/weights_file.pyth"]


def test_files_without_a_published_digest_are_not_hashed(monkeypatch, torch_home):
    _cached(b"anything")
    calls = _count_hashing(monkeypatch)
    download(URL, progress=False)
    assert calls == []


# ----------------------------------------------------------------- detectron2:// URLs of the shipped detection configs
D2_URL = "detectron2://ImageNetPretrained/mvitv2/MViTv2_T_in1k.pyth"


def test_detectron2_urls_offline_are_one_line(monkeypatch, torch_home):
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint(D2_URL, progress=False)
    message = str(err.value)
    assert "http://127.0.0.1:9/MViTv2_T_in1k.pyth" in message
    assert cache_path(get_weights("mvitv2_t.fb_in1k").url) in message and "\n" not in message


def test_detectron2_urls_use_the_same_cache(server, monkeypatch, torch_home):
    _mirror(server, monkeypatch, "/missing")
    target = Path(cache_path(get_weights("mvitv2_t.fb_in1k").url))
    target.parent.mkdir(parents=True)
    target.write_bytes(b"cached")
    assert resolve_checkpoint(D2_URL, progress=False) == str(target)  # the registered file, no network
    _mirror(server, monkeypatch)
    other = resolve_checkpoint("detectron2://ImageNetPretrained/MSRA/R-50.pkl", progress=False)
    assert other == cache_path("https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl")
    assert server.requests == ["/R-50.pkl"]


def test_the_shipped_detection_configs_name_registered_files():
    import re

    root = Path(__file__).resolve().parents[2] / "projects" / "detection" / "configs"
    urls = set(re.findall(r'"(detectron2://[^"]+)"', "".join(p.read_text() for p in root.glob("*.py"))))
    registered = {get_weights(t).file_name for t in list_weights()}
    assert urls and all(os.path.basename(u) in registered for u in urls), urls


def test_train_net_initialises_through_the_cache(monkeypatch, torch_home):
    train_net = pytest.importorskip("projects.detection.train_net")
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")
    with pytest.raises(CheckpointError, match="MViTv2_T_in1k.pyth"):
        train_net.initialize_from_checkpoint(None, D2_URL)
