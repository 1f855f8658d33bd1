"""Writing videos (H.264 mp4 by default) with PyAV, atomically (temp file in the same folder, then rename)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from fractions import Fraction

import av
import numpy as np


@contextlib.contextmanager
def _temp_next_to(path: str) -> Iterator[str]:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp.mp4", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def write_video(path: str, frames: Iterable[np.ndarray], *, fps: float, crf: int = 18, threads: int = 1,
                codec: str = "libx264", container_format: str = "mp4", gop: int | None = None,
                bframes: int | None = None) -> int:
    """Encode RGB uint8 ``H×W×3`` frames (even H and W) as H.264/yuv420p mp4 (or ``codec`` in
    ``container_format``, e.g. ``mpeg4`` in ``avi``) into ``path``; returns the frame count.

    The file appears only when complete. ``threads=1`` makes the output bit-identical across runs. ``crf``
    applies to libx264; ``gop`` and ``bframes`` set the keyframe interval and the most consecutive B-frames.
    """
    count = 0
    with _temp_next_to(path) as tmp:
        with av.open(tmp, mode="w", format=container_format) as container:
            stream = None
            for frame_array in frames:
                if stream is None:
                    rate = Fraction(fps).limit_denominator(1001)
                    stream = container.add_stream(codec, rate=rate)
                    stream.time_base = stream.codec_context.time_base = 1 / rate
                    stream.height, stream.width = frame_array.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    stream.codec_context.thread_count = threads
                    if gop is not None:
                        stream.codec_context.gop_size = gop
                    if bframes is not None:
                        stream.codec_context.max_b_frames = bframes
                    stream.options = {"crf": str(crf)} if codec == "libx264" else {}
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_array), format="rgb24")
                frame.pts = count
                for packet in stream.encode(frame):
                    container.mux(packet)
                count += 1
            if stream is None:
                raise ValueError(f"no frames to write to {path}")
            for packet in stream.encode():
                container.mux(packet)
    return count
