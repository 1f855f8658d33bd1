"""Opening a video file: the error every decoder raises, a video's basic facts and a PyAV open with clear reasons.

Torch-free (numpy at most): it runs in the decode helper process too.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import UserError


class DecodeError(UserError):
    """A video could not be decoded; ``path`` and a short ``reason`` (missing, zero-byte, not a video, ...)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"Cannot decode video {path}: {reason}.")
        self.path, self.reason = path, reason

    def __reduce__(self):  # picklable across DataLoader workers
        return DecodeError, (self.path, self.reason)


@dataclass(frozen=True)
class VideoInfo:
    """Frame count, frame rate and frame size of a video's first video stream."""

    num_frames: int
    fps: float
    height: int
    width: int


def check_file(path: str) -> None:
    """Raise :class:`DecodeError` for a missing or zero-byte local file (cheap checks before any decoder)."""
    if not os.path.exists(path):
        raise DecodeError(path, "missing file")
    if os.path.isdir(path):
        raise DecodeError(path, "a directory, not a video file")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise DecodeError(path, "zero-byte file")


def _open_failure_reason(path: str, error: Exception) -> str:
    with open(path, "rb") as f:
        head = f.read(12)
    if head[4:8] == b"ftyp":  # an mp4/mov header whose index (moov atom) is missing or damaged
        return f"truncated or damaged mp4 container ({type(error).__name__}: {str(error)[:120]})"
    return f"not a video file ({type(error).__name__}: {str(error)[:120]})"


def open_pyav(path: str, threads: int = 1):
    """``(container, stream)``: ``path`` opened with PyAV and its first video stream set up for ``threads``.

    Raises:
        DecodeError: not a video file, a truncated container, or no video stream.
    """
    import av

    try:
        container = av.open(path)
    except Exception as e:  # PyAV raises InvalidDataError, OSError, ... for unreadable inputs
        raise DecodeError(path, _open_failure_reason(path, e)) from None
    if not container.streams.video:
        container.close()
        raise DecodeError(path, "audio-only file (no video stream)")
    stream = container.streams.video[0]
    stream.thread_count = max(threads, 1)
    stream.thread_type = "AUTO" if threads > 1 else "SLICE"
    return container, stream


def short_error(error: BaseException) -> str:
    """``Type: message`` of ``error``, first line, at most 160 characters (for reasons in reports)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:160]}" if text else type(error).__name__


#: 8-bit planar pixel formats: each plane's visible bytes per row equal its width, so it is hashed in place
_PLANAR_8BIT = {"gray", "yuv410p", "yuv411p", "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv440p", "yuvj440p",
                "yuv444p", "yuvj444p"}


def frame_crc(frame) -> int:
    """CRC-32 of a decoded PyAV frame's visible pixels in its native format (identifies a frame within one
    build; the padding at the end of each row is left out, it is not part of the picture)."""
    if frame.format.name not in _PLANAR_8BIT:
        try:
            return zlib.crc32(frame.to_ndarray().tobytes())
        except (ValueError, NotImplementedError):  # a pixel format PyAV cannot export as an array
            return zlib.crc32(frame.reformat(format="yuv420p").to_ndarray().tobytes())
    crc = 0
    for plane in frame.planes:
        rows = np.frombuffer(plane, np.uint8, count=plane.height * plane.line_size).reshape(plane.height, -1)
        crc = zlib.crc32(np.ascontiguousarray(rows[:, :plane.width]), crc)
    return crc
