"""mvit.predict: one image or clip in, the top-k (class name, probability) out, from a tag or a model object."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import mvit
from mvit.checkpoint.hub import MIRROR_ENV
from mvit.errors import ConfigError, DataError
from mvit.inference import clip_indices, read_clip
from mvit.models.weights import class_names, get_weights
from tests.core.conftest import tiny_model
from tests.core.releases import IMAGE_TAG, VIDEO_TAG, place_in_cache, register_tiny_releases


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # nothing listens: a download would fail
    register_tiny_releases(monkeypatch)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    skimage_data = pytest.importorskip("skimage.data")
    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.astronaut()).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue())
    return str(path)


def _expected(model, x: torch.Tensor, names, k: int):
    with torch.inference_mode():
        probs = model.eval()(x.unsqueeze(0)).softmax(-1)[0]
    values, indices = probs.topk(k)
    return [(names[i], p) for p, i in zip(values.tolist(), indices.tolist())]


def test_predict_a_photo_from_a_tag(offline, photo):
    from projects.classification.data import load_image

    state = place_in_cache(IMAGE_TAG)
    top = mvit.predict(IMAGE_TAG, photo, topk=5, progress=False)
    model = mvit.create_model(IMAGE_TAG)
    model.load_state_dict(state)
    expected = _expected(model, get_weights(IMAGE_TAG).transforms()(load_image(photo)), class_names("imagenet-1k"), 5)
    assert [n for n, _ in top] == [n for n, _ in expected]
    assert np.allclose([p for _, p in top], [p for _, p in expected], atol=1e-6)
    assert all(isinstance(n, str) and 0 < p <= 1 for n, p in top) and top[0][1] >= top[-1][1]
    # The same from a PIL image and from the model object with its weights' preprocessing.
    assert mvit.predict(IMAGE_TAG, Image.open(photo), progress=False) == top
    assert mvit.predict(model, photo, weights=IMAGE_TAG) == top


def test_predict_a_model_object_without_weights_uses_imagenet_preprocessing(photo):
    model = tiny_model(2, num_classes=7)
    top = mvit.predict(model, photo, topk=3)
    assert [n for n, _ in top] and all(n.isdigit() for n, _ in top)  # no names for 7 classes: the indices
    x = get_weights("mvitv2_t.fb_in1k").transforms()(Image.open(photo))  # resize 256, crop 224
    assert top == _expected(model, x, [str(i) for i in range(7)], 3)
    model.train()
    mvit.predict(model, photo, topk=1)
    assert model.training  # the model's mode is restored


def _write_clip(path, frames: np.ndarray, fps: int = 10) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_clip_sampling_takes_the_middle_of_the_video(tmp_path):
    assert clip_indices(20, 4, 2) == [6, 8, 10, 12]  # span 7, centred
    assert clip_indices(5, 4, 2) == [0, 2, 4, 4]  # shorter than the span: the last frame repeats
    levels = np.arange(20) * 12  # frame i is uniformly grey at 12 * i: its level names it after lossy coding
    frames = np.broadcast_to(levels[:, None, None, None], (20, 48, 64, 3)).astype(np.uint8)
    _write_clip(tmp_path / "ramp.mp4", frames)
    clip = read_clip(str(tmp_path / "ramp.mp4"), 4, 2)
    assert clip.shape == (4, 48, 64, 3) and clip.dtype == torch.uint8
    assert np.allclose(clip.float().mean(dim=(1, 2, 3)).numpy(), levels[[6, 8, 10, 12]], atol=3)


def test_predict_a_clip_from_a_tag(offline, tmp_path):
    rng = np.random.default_rng(0)
    _write_clip(tmp_path / "clip.mp4", rng.integers(0, 256, (12, 40, 56, 3), dtype=np.uint8))
    state = place_in_cache(VIDEO_TAG)
    top = mvit.predict(VIDEO_TAG, str(tmp_path / "clip.mp4"), topk=3, progress=False)
    model = mvit.create_model(VIDEO_TAG)
    model.load_state_dict(state)
    clip = read_clip(str(tmp_path / "clip.mp4"), 4, 2)
    expected = _expected(model, get_weights(VIDEO_TAG).transforms()(clip), class_names("kinetics-400"), 3)
    assert [n for n, _ in top] == [n for n, _ in expected]
    assert np.allclose([p for _, p in top], [p for _, p in expected], atol=1e-6)
    with pytest.raises(ConfigError, match="is a video, but the model is an image model"):
        mvit.predict(tiny_model(2), str(tmp_path / "clip.mp4"))


def test_wrong_input_kinds_are_one_line(offline, photo, tmp_path):
    place_in_cache(VIDEO_TAG)
    with pytest.raises(ConfigError, match="astronaut.jpg is an image, but the model is a video model"):
        mvit.predict(VIDEO_TAG, photo, progress=False)
    with pytest.raises(ConfigError, match="needs weights=<tag>"):
        mvit.predict(tiny_model(3), torch.zeros(4, 32, 32, 3, dtype=torch.uint8))
    with pytest.raises(DataError, match="no such file: missing.jpg"):
        mvit.predict(tiny_model(2), "missing.jpg")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="broken.mp4: not a readable video"):
        read_clip(str(tmp_path / "broken.mp4"), 4, 2)
