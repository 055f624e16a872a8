"""Weights carry their test-time transforms: the same bytes as the projects' test pipelines."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mvit.models.weights import get_weights, list_weights


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory) -> str:
    """scikit-image's astronaut photo (512x512 RGB) saved as a JPEG file."""
    skimage_data = pytest.importorskip("skimage.data")
    path = tmp_path_factory.mktemp("images") / "astronaut.jpg"
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.astronaut()).crop((0, 0, 512, 380)).save(buffer, "JPEG")  # not square
    path.write_bytes(buffer.getvalue())
    return str(path)


@pytest.mark.parametrize("config", ["configs/IN1K/MVITv2_T.yaml", "configs/IN1K/MVITv2_L.yaml"])
def test_image_transform_gives_the_classification_test_pipelines_bytes(astronaut, config):
    from mvit.config import load_config
    from projects.classification.data import build_transform, load_image

    image = load_image(astronaut)
    expected = build_transform(load_config(config), is_training=False)(image)
    tag = "mvitv2_t.fb_in1k" if "_T" in config else "mvitv2_l.fb_in1k"
    actual = get_weights(tag).transforms()(image)
    assert actual.dtype == torch.float32 and actual.shape == (3, 224, 224)
    assert torch.equal(actual, expected)


def test_image_transform_takes_uint8_tensors_and_other_modes(astronaut):
    transform = get_weights("mvitv2_t.fb_in1k").transforms()
    image = Image.open(astronaut)
    from_tensor = transform(torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous())
    from_pil = transform(image)
    assert from_tensor.shape == from_pil.shape == (3, 224, 224)
    assert (from_tensor - from_pil).abs().mean() < 0.05  # torch's resize, not Pillow's: close, not equal
    assert torch.equal(transform(image.convert("L")), transform(image.convert("L").convert("RGB")))


@pytest.mark.parametrize("tag", ["mvitv2_s_16x4.fb_k400", "mvitv2_l_40x3.fb_k400", "mvitv2_s_16x4.fb_ssv2"])
def test_clip_transform_gives_the_video_test_views_bytes(tag):
    from projects.video.data.transforms import VideoEvalTransform

    p = get_weights(tag).preprocessing
    torch.manual_seed(0)
    clip = torch.randint(0, 256, (3, 3, 47, 69), dtype=torch.uint8)  # (T, C, H, W), odd sizes: the rounding shows
    transform = get_weights(tag).transforms()
    transform.resize_size, transform.crop_size = 40, 33  # small, same arithmetic
    expected_input = clip.flip(1) if p.channel_order == "BGR" else clip  # the project reads BGR frames as BGR
    expected = VideoEvalTransform(40, 33, p.mean, p.std)(expected_input)
    assert torch.equal(transform(clip), expected)
    assert torch.equal(transform(clip.permute(0, 2, 3, 1)), expected)  # (T, H, W, C), as decoders give
    assert expected.shape == (3, 3, 33, 33)
    assert (transform.num_frames, transform.sampling_rate) == (p.num_frames, p.sampling_rate)


def test_every_classifier_has_transforms_and_documented_class_names():
    for tag in list_weights(include_detectors=False):
        weights = get_weights(tag)
        assert callable(weights.transforms())
        names = weights.class_names
        assert names is None or len(names) == weights.num_classes, tag
    assert get_weights("mvitv2_t.fb_in1k").class_names[0] == "tench"
    assert get_weights("mvitv2_s_16x4.fb_k400").class_names[0] == "abseiling"


def test_bad_clip_input_says_what_it_expected():
    transform = get_weights("mvitv2_s_16x4.fb_k400").transforms()
    with pytest.raises(TypeError, match=r"uint8 clip \(T, H, W, 3\)"):
        transform(torch.zeros(2, 5, 5, dtype=torch.uint8))
