"""Decode the frames of one clip with PyAV, as pytorchvideo's ``EncodedVideoPyAV`` does, doing only the work needed.

torchvision 0.29 has no video reader. :class:`VideoReader` keeps pytorchvideo's timing (frame indices -> a
timestamp window, its seek, its RGB conversion) and adds the two header fields PySlowFast's frame arithmetic
needs, the frame rate and the frame count; it returns the frames of ``EncodedVideoPyAV.get_clip`` bit for bit,
without its float32 copy, without converting frames that are not sampled, and without decoding a WebM file whole
when it is opened. :class:`ReferenceVideoReader` is pytorchvideo's path, for tests and the loader benchmark.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction
from typing import Callable, Tuple

import av
import torch
from iopath.common.file_io import g_pathmgr
from pytorchvideo.data.encoded_video_pyav import EncodedVideoPyAV
from pytorchvideo.data.utils import pts_to_secs, secs_to_pts

from mvit.errors import DataError

__all__ = ["ReferenceVideoReader", "VideoDecodeError", "VideoReader"]


class VideoDecodeError(DataError, RuntimeError):
    """A video that cannot be opened or yields no frames; the message names the file.

    A :class:`~mvit.errors.DataError` (one line, exit code 2 where it stops a tool) and, as before, a
    ``RuntimeError``.
    """


def _open_failure(message: str, path: str) -> str:
    """pytorchvideo's open error without the path it repeats ("Failed to open video <path>. <PyAV's error>")."""
    if message.startswith("Video stream not found"):
        return "no video stream (an audio-only or empty file?)"
    prefix = f"Failed to open video {path}. "
    return f"cannot open ({message[len(prefix) :]})" if message.startswith(prefix) else message


class VideoReader(EncodedVideoPyAV):
    """pytorchvideo's PyAV reader with frame-indexed access that decodes only what a clip needs.

    Args:
        path: any path :mod:`iopath` reads (local, ``manifold://``, ``https://``).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with g_pathmgr.open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise VideoDecodeError(f"{path}: cannot read ({err})") from None
        if not data:
            raise VideoDecodeError(f"{path}: empty file")
        self._open(data)
        stream = self._container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if not rate or rate <= 0:
            self.close()
            raise VideoDecodeError(f"{path}: no frame rate in the header")
        self.fps: Fraction = Fraction(rate)
        if stream.frames > 0:
            self.num_frames = int(stream.frames)
        elif self.duration:
            self.num_frames = max(1, round(float(self.duration) * float(self.fps)))
        else:
            self.close()
            raise VideoDecodeError(f"{path}: neither a frame count nor a duration in the header")

    def _open(self, data: bytes) -> None:
        """Open the container and read the stream's timing, as pytorchvideo's reader does, without decoding.

        pytorchvideo decodes the whole video when the stream header has no duration (WebM / Matroska); the
        duration it then takes, the last frame's timestamp, is read here from the packets (demuxing only), and
        spans are decoded after a seek like in any other file.
        """
        self._video_name, self._decode_audio, self._has_audio = self.path, False, None
        self._video, self._audio, self._selective_decoding = None, None, True
        try:
            self._container = av.open(io.BytesIO(data))
        except Exception as err:  # noqa: BLE001 - PyAV raises many types for bad files, as pytorchvideo catches
            raise VideoDecodeError(f"{self.path}: cannot open ({err})") from None
        if not self._container.streams.video:
            self.close()
            raise VideoDecodeError(f"{self.path}: {_open_failure('Video stream not found', self.path)}")
        stream = self._container.streams.video[0]
        self._video_time_base = stream.time_base
        self._video_start_pts = 0.0 if stream.start_time is None else stream.start_time
        end_pts = stream.duration
        if end_pts is None:
            try:
                end_pts = max((p.pts for p in self._container.demux(stream) if p.pts is not None), default=None)
            except av.error.FFmpegError:
                end_pts = None
            if end_pts is None:
                self.close()
                raise VideoDecodeError(f"{self.path}: Unable to decode video stream")
        self._duration = pts_to_secs(end_pts, self._video_time_base, self._video_start_pts)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_frames(self, indices: torch.Tensor) -> torch.Tensor:
        """Frames at ``indices`` (frame numbers at the video's own rate).

        Only the span ``[min, max]`` of the indices is decoded: a seek to the keyframe before it, decoding up to
        its last frame (skipping the non-reference frames before it), and the YUV -> RGB conversion of the
        sampled frames only, uint8 throughout. The frames are those of pytorchvideo's ``get_clip`` on the same
        window, bit for bit (tests/video/test_decoding_speedpath.py). If the stream ends early (header frame count
        too large) the missing indices repeat the last decoded frame, as PySlowFast's clamp does for short videos.

        Args:
            indices: (T,) int64 frame numbers in ``[0, num_frames - 1]``.
        Returns:
            (T, 3, H, W) uint8 RGB frames.
        Raises:
            VideoDecodeError: a decoding error in the span (truncated or damaged file), or no frame in it.
        """
        first, last = int(indices.min()), int(indices.max())
        start_pts, end_pts = self.span_pts(indices)
        span = f"frames [{first}, {last}]"
        try:
            frames = self._span(start_pts, end_pts)
        except (av.error.FFmpegError, OSError, ValueError, TypeError) as err:
            # pytorchvideo kept no frame of a span whose decoding failed either.
            raise VideoDecodeError(f"{self.path}: cannot decode {span} ({err})") from None
        if not frames:
            raise VideoDecodeError(f"{self.path}: no frame decoded in {span} (truncated or damaged?)")
        positions = (indices - first).clamp(max=len(frames) - 1).tolist()
        # Convert each sampled frame once (a frame repeats when the clip is slower than the video).
        rgb = {i: _to_rgb(frames[i]) for i in dict.fromkeys(positions)}
        try:
            clip = torch.stack([rgb[i] for i in positions])
        except RuntimeError as err:  # frames of different sizes in one span
            raise VideoDecodeError(f"{self.path}: cannot decode {span} ({err})") from None
        # (T, H, W, C) -> (T, C, H, W): a view, the memory layout pytorchvideo's clips had.
        return clip.permute(0, 3, 1, 2)

    def get_all_frames(self, select: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """Decode the whole video and return the frames ``select(number of decoded frames)`` picks.

        The frames of pytorchvideo's ``get_clip(0, inf)``; only the picked ones are converted to RGB.

        Returns:
            (T, 3, H, W) uint8 RGB frames.
        Raises:
            VideoDecodeError: a decoding error, or no frame at all.
        """
        start_pts = secs_to_pts(0, self._video_time_base, self._video_start_pts, "ceil")
        try:
            frames = self._span(start_pts, math.inf)
        except (av.error.FFmpegError, OSError, ValueError, TypeError) as err:
            raise VideoDecodeError(f"{self.path}: cannot decode ({err})") from None
        if not frames:
            raise VideoDecodeError(f"{self.path}: no frame decoded")
        positions = select(len(frames)).tolist()
        rgb = {i: _to_rgb(frames[i]) for i in dict.fromkeys(positions)}
        try:
            return torch.stack([rgb[i] for i in positions]).permute(0, 3, 1, 2)
        except RuntimeError as err:  # frames of different sizes
            raise VideoDecodeError(f"{self.path}: cannot decode ({err})") from None

    def span_pts(self, indices: torch.Tensor) -> Tuple[int, int]:
        """``[start, end)`` in the stream's time base of the frames ``min(indices)`` to ``max(indices)``."""
        # Fraction keeps the window exact in the stream's time base (frame k starts at k / fps).
        first, end = Fraction(int(indices.min())) / self.fps, Fraction(int(indices.max()) + 1) / self.fps
        time_base, start = self._video_time_base, self._video_start_pts
        return secs_to_pts(first, time_base, start, "ceil"), secs_to_pts(end, time_base, start, "ceil")

    def _span(self, start_pts: int, end_pts: int) -> list:
        """Frames with ``start_pts <= pts < end_pts`` in pts order (one per pts), not yet converted to RGB."""
        if not self._selective_decoding:  # no duration in the header: pytorchvideo decoded the whole file
            return [frame for frame, pts in self._video or () if start_pts <= pts < end_pts]
        stream = self._container.streams.video[0]
        # pytorchvideo's seek (1024 time-base units early, then back to a keyframe), so the frames are the same.
        self._container.seek(max(start_pts - 1024, 0), any_frame=False, backward=True, stream=stream)
        codec, frames = stream.codec_context, {}
        try:
            for packet in self._container.demux(stream):
                # A frame before the span that no other frame refers to (most B-frames) is not decoded at all.
                before = packet.pts is not None and packet.pts < start_pts
                codec.skip_frame = "NONREF" if before else "DEFAULT"
                for frame in packet.decode():
                    if frame.pts >= end_pts:
                        return [frames[pts] for pts in sorted(frames)]  # the frames after the span are not decoded
                    if frame.pts >= start_pts:
                        frames[frame.pts] = frame
        finally:
            codec.skip_frame = "DEFAULT"
        return [frames[pts] for pts in sorted(frames)]


def _to_rgb(frame) -> torch.Tensor:
    """(H, W, 3) uint8 RGB of a decoded frame (an ``av.VideoFrame`` or a tensor pytorchvideo already converted)."""
    if isinstance(frame, torch.Tensor):
        return frame
    # The conversion pytorchvideo makes (to_rgb: swscale's default), so the pixels are identical.
    return torch.from_numpy(frame.to_rgb().to_ndarray())


class ReferenceVideoReader(VideoReader):
    """The previous decoding path, kept as the reference of tests and of ``tools/benchmark.py --loader``.

    pytorchvideo's ``get_clip`` on the same window: every frame of the span converted to RGB, stacked as
    float32 and converted back to uint8.
    """

    def _open(self, data: bytes) -> None:
        try:
            EncodedVideoPyAV.__init__(self, io.BytesIO(data), video_name=self.path, decode_audio=False)
        except RuntimeError as err:  # pytorchvideo wraps every PyAV open / stream error in RuntimeError
            raise VideoDecodeError(f"{self.path}: {_open_failure(str(err), self.path)}") from None

    def get_frames(self, indices: torch.Tensor) -> torch.Tensor:
        first, last = int(indices.min()), int(indices.max())
        try:
            clip = self.get_clip(Fraction(first) / self.fps, Fraction(last + 1) / self.fps)["video"]
        except (RuntimeError, OSError, av.error.FFmpegError) as err:
            raise VideoDecodeError(f"{self.path}: cannot decode frames [{first}, {last}] ({err})") from None
        if clip is None or clip.shape[1] == 0:
            raise VideoDecodeError(f"{self.path}: no frame decoded in frames [{first}, {last}] (truncated or damaged?)")
        clip = clip.permute(1, 0, 2, 3).to(torch.uint8)
        return clip[(indices - first).clamp(max=clip.shape[0] - 1)]
