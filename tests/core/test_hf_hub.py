"""The same releases from the Hugging Face hub (timm's safetensors copies), against a local server standing in
for the hub: huggingface_hub asks ``{HF_ENDPOINT}/{repo}/resolve/{revision}/{file}`` (HEAD for the commit, ETag
and size, then GET)."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import re
import threading

import pytest
import torch

from mvit import create_model
from mvit.checkpoint import verify
from mvit.checkpoint.hub import MIRROR_ENV, resolve_checkpoint
from mvit.checkpoint.pretrained import SOURCE_ENV
from mvit.checkpoint.safe_io import write_safetensors
from mvit.errors import CheckpointError, ConfigError
from mvit.models import weights as registry
from tests.core.releases import IMAGE_TAG, register_tiny_releases

pytest.importorskip("huggingface_hub")
from huggingface_hub import constants as hf_constants  # noqa: E402

REPO = "timm/mvitv2_tiny32.fb_in1k"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def as_timm(state: dict, depths=(1, 1, 2, 1)) -> dict:
    """Our keys in timm's layout (stages.{s}.blocks.{j}, shortcut_proj_attn, head.fc), as timm's files hold them."""
    stage_of = [(s, j) for s, depth in enumerate(depths) for j in range(depth)]
    out = {}
    for key, value in state.items():
        m = re.match(r"blocks\.(\d+)\.(.*)", key)
        if m:
            s, j = stage_of[int(m.group(1))]
            rest = re.sub(r"^proj\.", "shortcut_proj_attn.", m.group(2))
            key = f"stages.{s}.blocks.{j}.{rest}"
        out[key.replace("head.projection.", "head.fc.")] = value.contiguous()
    return out


class _Hub(http.server.BaseHTTPRequestHandler):
    def _answer(self, with_body: bool) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        body = self.server.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')  # an LFS file's etag: its sha256
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(True)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hf(tmp_path, monkeypatch):
    """A local hub serving timm-layout safetensors of the tiny image release; caches under tmp_path."""
    register_tiny_releases(monkeypatch)
    release = registry.get_weights(IMAGE_TAG)
    monkeypatch.setitem(registry._REGISTRY, IMAGE_TAG, dataclasses.replace(release, hf_hub_id=REPO))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # the publisher's URL is unreachable
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    source = create_model(IMAGE_TAG)
    path = tmp_path / "model.safetensors"
    write_safetensors(as_timm(source.state_dict()), str(path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    httpd.requests, httpd.files = [], {f"/{REPO}/resolve/main/model.safetensors": path.read_bytes()}
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{httpd.server_port}")
    yield httpd, source
    httpd.shutdown()
    httpd.server_close()


def _same(a, b) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_a_release_from_the_hub_loads_the_same_weights(hf, monkeypatch):
    server, source = hf
    _same(create_model("mvitv2_tiny32", pretrained=f"hf-hub:{REPO}", progress=False), source)
    assert server.requests[-1] == f"GET /{REPO}/resolve/main/model.safetensors"
    assert all("model.safetensors" in r for r in server.requests)  # never a pickle file
    monkeypatch.setenv(SOURCE_ENV, "hf")  # every release from the hub
    _same(create_model(IMAGE_TAG, pretrained=True, progress=False), source)
    assert resolve_checkpoint(f"hf-hub:{REPO}").endswith("model.safetensors")


def test_the_hub_file_is_checked_once_against_its_sha256(hf, monkeypatch):
    server, _ = hf
    calls = []
    real = verify.sha256_of
    monkeypatch.setattr(verify, "sha256_of", lambda path: calls.append(path) or real(path))
    path = resolve_checkpoint(f"hf-hub:{REPO}")
    resolve_checkpoint(f"hf-hub:{REPO}")
    assert len(calls) == 1
    blob = os.path.realpath(path)
    with open(blob, "r+b") as f:  # corrupt the cached blob
        f.seek(100)
        f.write(b"\0" * 8)
    with pytest.raises(CheckpointError, match="does not match the published") as err:
        resolve_checkpoint(f"hf-hub:{REPO}")
    assert blob in str(err.value) and "delete it" in str(err.value) and "\n" not in str(err.value)


def test_offline_is_one_line_naming_the_repo_and_the_file(hf, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    waits = []
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", waits.append)  # its retries' backoff, not waited
    with pytest.raises(CheckpointError) as err:
        create_model(IMAGE_TAG, pretrained=f"hf-hub:{REPO}", progress=False)
    message = str(err.value)
    assert f"model.safetensors of hf-hub:{REPO}" in message and "\n" not in message
    assert waits  # huggingface_hub retried before giving up


def test_a_cached_hub_file_is_used_without_the_hub(hf, monkeypatch):
    server, source = hf
    resolve_checkpoint(f"hf-hub:{REPO}")
    count = len(server.requests)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    _same(create_model("mvitv2_tiny32", pretrained=f"hf-hub:{REPO}", progress=False), source)
    assert len(server.requests) == count


def test_unknown_hub_repos_and_sources_are_one_line(hf, monkeypatch):
    with pytest.raises(ConfigError, match="not a release of the registry on the hub; known: .*hf-hub:timm/mvitv2"):
        create_model("mvitv2_t", pretrained="hf-hub:someone/other")
    monkeypatch.setenv(SOURCE_ENV, "ftp")
    with pytest.raises(ConfigError, match="MVIT_WEIGHTS_SOURCE='ftp': expected one of url, hf"):
        create_model(IMAGE_TAG, pretrained=True)


def test_the_registry_names_timms_hub_copies_of_the_official_files():
    import timm

    for tag in registry.list_weights():
        weights = registry.get_weights(tag)
        if weights.hf_hub_id:
            timm_name = weights.hf_hub_id.split("/", 1)[1]
            assert timm_name in timm.list_pretrained(), timm_name
            assert timm.models.get_pretrained_cfg(timm_name).url == weights.url  # the same file, republished
