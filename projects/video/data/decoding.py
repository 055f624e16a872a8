"""Decode the frames of one clip with PyAV through ``pytorchvideo.data``.

torchvision 0.29 has no video reader; pytorchvideo's ``EncodedVideoPyAV`` (seek + selective decoding by
timestamp) works with PyAV 18. It does not expose the two header fields PySlowFast's frame arithmetic needs,
the frame rate and the frame count, so :class:`VideoReader` adds them and turns frame indices into the
timestamp window it asks pytorchvideo for.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import torch
from iopath.common.file_io import g_pathmgr
from pytorchvideo.data.encoded_video_pyav import EncodedVideoPyAV

from mvit.errors import DataError

__all__ = ["VideoDecodeError", "VideoReader"]


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
    """pytorchvideo's PyAV reader plus frame-indexed access.

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
        try:
            super().__init__(io.BytesIO(data), video_name=path, decode_audio=False)
        except RuntimeError as err:  # pytorchvideo wraps every PyAV open / stream error in RuntimeError
            raise VideoDecodeError(f"{path}: {_open_failure(str(err), path)}") from None
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

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_frames(self, indices: torch.Tensor) -> torch.Tensor:
        """Frames at ``indices`` (frame numbers at the video's own rate).

        Only the span ``[min, max]`` of the indices is decoded. If the stream ends early (header frame count
        too large) the missing indices repeat the last decoded frame, as PySlowFast's clamp does for short
        videos. A decoding error inside the span (a truncated or damaged file) is a :class:`VideoDecodeError`:
        pytorchvideo keeps no frame of a span whose decoding fails.

        Args:
            indices: (T,) int64 frame numbers in ``[0, num_frames - 1]``.
        Returns:
            (T, 3, H, W) uint8 RGB frames.
        Raises:
            VideoDecodeError: no frame could be decoded in the span.
        """
        first, last = int(indices.min()), int(indices.max())
        # Fraction keeps the window exact in the stream's time base (frame k starts at k / fps).
        try:
            clip = self.get_clip(Fraction(first) / self.fps, Fraction(last + 1) / self.fps)["video"]
        except (RuntimeError, OSError, av.error.FFmpegError) as err:  # e.g. frames of different sizes in one span
            raise VideoDecodeError(f"{self.path}: cannot decode frames [{first}, {last}] ({err})") from None
        if clip is None or clip.shape[1] == 0:
            raise VideoDecodeError(f"{self.path}: no frame decoded in frames [{first}, {last}] (truncated or damaged?)")
        # (C, T, H, W) float32 in [0, 255] with integer values -> (T, C, H, W) uint8, exactly.
        clip = clip.permute(1, 0, 2, 3).to(torch.uint8)
        return clip[(indices - first).clamp(max=clip.shape[0] - 1)]
