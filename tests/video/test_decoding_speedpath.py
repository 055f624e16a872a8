"""The fast decoding path returns the frames of the previous one (pytorchvideo's ``get_clip``), bit for bit.

Generated clips of the codecs and containers of Kinetics downloads: H.264 and MPEG-4 in mp4 (a duration in the
stream header: both readers seek), VP9 in WebM (no stream duration: pytorchvideo decoded the whole file at open,
the fast reader reads the last timestamp from the packets and seeks). B-frames and a short GOP put keyframes
inside the clips, so spans start after a seek to a keyframe before them.
"""

from __future__ import annotations

import random

import av
import numpy as np
import pytest
import torch

from projects.video.data import ClipSampling, Kinetics
from projects.video.data.decoding import ReferenceVideoReader, VideoDecodeError, VideoReader
from projects.video.data.sampling import clip_frame_indices
from projects.video.data.transforms import VideoEvalTransform, VideoTrainTransform

# (encoder, fps, suffix): 2 s clips of 64x48, 40-60 frames each.
CLIPS = (("libx264", 30, "mp4"), ("mpeg4", 25, "mp4"), ("libvpx-vp9", 30, "webm"), ("libx264", 60, "mkv"))


def _write_clip(path: str, codec: str, fps: int, seed: int) -> None:
    """Moving noise texture: every frame differs, so a frame off by one is caught."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8"} if "vp9" in codec else {}
        stream.gop_size = 12  # keyframes inside the clip: spans start after a seek
        if codec == "libx264":
            stream.options = {"bf": "2"}
        for i in range(2 * fps):
            frame = texture[i % 48 : i % 48 + 48, 2 * i % 96 : 2 * i % 96 + 64]
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list:
    root = tmp_path_factory.mktemp("codec_clips")
    paths = []
    for i, (codec, fps, suffix) in enumerate(CLIPS):
        path = str(root / f"{i}_{codec}.{suffix}")
        _write_clip(path, codec, fps, seed=i)
        paths.append(path)
    return paths


def _spans(num_frames: int, fps: float) -> list:
    """Test views (3 clips) and random training spans of 8 frames every 2 (at 30 fps), plus the edges."""
    random.seed(0)
    views = [clip_frame_indices(num_frames, 8, 2, fps, 30.0, i, 3, True) for i in range(3)]
    train = [clip_frame_indices(num_frames, 8, 2, fps, 30.0, -1, 1) for _ in range(3)]
    edges = [torch.tensor([0]), torch.tensor([num_frames - 1]), torch.tensor([num_frames - 3, num_frames - 1])]
    return views + train + edges


def test_frames_identical_to_pytorchvideo(clips):
    for path in clips:
        with VideoReader(path) as fast, ReferenceVideoReader(path) as ref:
            assert (fast.num_frames, fast.fps, fast.duration) == (ref.num_frames, ref.fps, ref.duration), path
            for indices in _spans(fast.num_frames, float(fast.fps)):
                try:
                    old = ref.get_frames(indices)
                except VideoDecodeError:
                    # A 1 ms time base (WebM) can leave a 1-frame window empty: the same error both ways.
                    with pytest.raises(VideoDecodeError, match="no frame decoded"):
                        fast.get_frames(indices)
                    continue
                new = fast.get_frames(indices)
                assert new.dtype == torch.uint8 and new.shape == old.shape, path
                assert torch.equal(new, old), f"{path}: frames {indices.tolist()} differ"


def test_webm_not_decoded_at_open(clips, monkeypatch):
    """The WebM header has no stream duration: opening reads packets and decodes no frame (pytorchvideo's
    reader decoded the whole file there)."""
    webm = next(p for p in clips if p.endswith(".webm"))
    assert av.open(webm).streams.video[0].duration is None  # the case this test is about
    decoded = []
    real_decode = av.container.InputContainer.decode
    monkeypatch.setattr(
        av.container.InputContainer, "decode", lambda *a, **k: decoded.append(1) or real_decode(*a, **k)
    )
    with ReferenceVideoReader(webm):
        assert decoded  # the check sees pytorchvideo's decoding
    decoded.clear()
    with VideoReader(webm) as reader:
        assert not decoded
        assert reader.get_frames(torch.tensor([3, 5])).shape == (2, 3, 48, 64)


def _dataset(paths: list, train: bool, reader) -> Kinetics:
    mean, std = (0.45,) * 3, (0.225,) * 3
    dataset = Kinetics(
        paths,
        list(range(len(paths))),
        ClipSampling(8, 2, 30.0, True),
        train=train,
        train_transform=VideoTrainTransform(
            32, (40, 48), mean, std, rand_augment="rand-m7-n4-mstd0.5-inc1", erase_prob=0.25
        ),  # fmt: skip
        eval_transform=VideoEvalTransform(40, 32, mean, std),
        num_clips=3,
        num_crops=3,
        num_samples=2,
    )
    dataset.reader = reader
    return dataset


def test_test_pipeline_identical(clips):
    fast, ref = _dataset(clips, False, VideoReader), _dataset(clips, False, ReferenceVideoReader)
    for index in range(0, len(fast), 2):  # every clip, each of the 3 crops on some clip
        (new, label, i), (old, label_ref, i_ref) = fast[index], ref[index]
        assert (label, i) == (label_ref, i_ref)
        assert torch.equal(new, old), f"test item {index} differs"


def test_training_pipeline_identical_draws(clips):
    """Same seeds, same training items: the frames are the same, so every augmentation draw is too."""
    fast, ref = _dataset(clips, True, VideoReader), _dataset(clips, True, ReferenceVideoReader)
    for index in range(len(fast)):
        items = []
        for dataset in (fast, ref):
            random.seed(index)
            np.random.seed(index)
            torch.manual_seed(index)
            items.append(dataset[index])
        (new, *_), (old, *_) = items
        assert all(torch.equal(a, b) for a, b in zip(new, old)), f"training item {index} differs"


def test_whole_video_identical_to_pytorchvideo(clips):
    """SSv2 reads every frame of a video: the same frames as pytorchvideo's ``get_clip(0, inf)``."""
    for path in clips:
        with ReferenceVideoReader(path) as ref:
            everything = ref.get_clip(0, float("inf"))["video"].permute(1, 0, 2, 3).to(torch.uint8)
        picked = []

        def select(count: int, picked: list = picked) -> torch.Tensor:
            picked.append(count)
            return torch.arange(count - 1, -1, -3)  # backwards, every third frame

        with VideoReader(path) as fast:
            frames = fast.get_all_frames(select)
        assert picked == [everything.shape[0]], path
        assert torch.equal(frames, everything[torch.arange(picked[0] - 1, -1, -3)]), path
