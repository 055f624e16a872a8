"""tools/predict.py as a new user calls it: --model without a yaml, files after --opts, the wrong kind of file or
release said in words (one line, exit 2, before any download), and which device and weights it used."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.models import ResNet50_Weights

from mvit.api import resolve_config
from mvit.checkpoint import hub
from mvit.models import MViT
from mvit.models.weights import get_weights

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))  # tools/ is a folder of scripts, not a package
import predict  # noqa: E402

sys.path.pop(0)


@pytest.fixture
def no_download(monkeypatch, tmp_path):
    """An empty torch.hub cache and a download that fails the test if it would fetch anything."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    download = hub.download

    def refuse(url, *args, **kwargs):
        if not os.path.isfile(hub.cache_path(url)):
            raise AssertionError(f"downloaded {url}")
        return download(url, *args, **kwargs)

    monkeypatch.setattr(hub, "download", refuse)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def photo(tmp_path) -> str:
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (240, 200), (200, 30, 30)).save(path)
    return str(path)


def _error(argv, capsys) -> str:
    assert predict.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_model_tag_without_a_yaml_files_around_opts_and_the_weights_line(no_download, photo, tmp_path, capsys):
    weights = get_weights("mvitv2_t.fb_in1k")
    cached = no_download / weights.file_name  # the release as torch.hub's cache holds it (random values here)
    cached.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"model_state": MViT(resolve_config("mvitv2_t")).state_dict()}, cached)
    second = str(tmp_path / "second.png")
    Image.new("RGB", (64, 64), (10, 200, 10)).save(second)

    assert (
        predict.main(["--model", "mvitv2_t", photo, "--device", "cpu", "--opts", "TEST.BATCH_SIZE", "2", second]) == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Device: cpu (--device cpu)"
    assert out[1] == f"Weights: zoo:mvitv2_t.fb_in1k -> {cached} (official format)"
    assert out[2] == photo and out[8] == second  # both files, in order, 5 classes each
    imagenet = ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
    names = [line.split("%", 1)[1].strip().rsplit(" (", 1)[0] for line in out[3:8] + out[9:14]]
    assert len(names) == 10 and all(n in imagenet for n in names)


def test_an_image_for_a_video_model_and_a_video_for_an_image_model(no_download, photo, tmp_path, capsys):
    line = _error(["--model", "mvitv2_s_16x4.fb_k400", photo], capsys)
    assert line == (
        f"error: {photo}: an image, but mvitv2_s_16x4.fb_k400 is a video model "
        "(it takes clips: .mp4, .avi, .mkv, .webm, .mov, .m4v)"
    )
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 16)
    line = _error(["--cfg", str(ROOT / "configs/IN1K/MVITv2_T.yaml"), "--pretrained", str(clip)], capsys)
    assert line.startswith(f"error: {clip}: a video, but mvitv2_t is an image model")


def test_a_release_of_another_architecture_is_refused_before_download(no_download, photo, tiny_cfg, capsys):
    t_yaml = str(ROOT / "configs/IN1K/MVITv2_T.yaml")
    line = _error(["--cfg", t_yaml, "--checkpoint", "zoo:mvitv2_s.fb_in1k", photo], capsys)
    assert line == f"error: zoo:mvitv2_s.fb_in1k is a release of mvitv2_s, but {t_yaml} builds mvitv2_t"
    # A yaml without MVIT.ARCH: compared field by field.
    line = _error(["--cfg", str(tiny_cfg), "--checkpoint", "zoo:mvitv2_t.fb_in1k", photo], capsys)
    assert line.startswith("error: zoo:mvitv2_t.fb_in1k is a release of mvitv2_t (depth 10), but the model of")
    line = _error(["--cfg", t_yaml, "--checkpoint", "zoo:mvitv2_t.fb_coco_mask_rcnn", photo], capsys)
    assert "is a detectron2 detector; predict with --cfg projects/detection/configs/" in line
    assert "did you mean mvitv2_t" in _error(["--model", "mvitv2_tt", photo], capsys)
    assert "no input" in _error(["--model", "mvitv2_t"], capsys)
    assert "--device" in _error(["--model", "mvitv2_t", photo, "--device", "gpu"], capsys)
    assert not os.path.exists(no_download)  # nothing was fetched
