"""Writing H.264 mp4 files with PyAV, atomically (temp file in the same folder, then rename)."""
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


def write_video(path: str, frames: Iterable[np.ndarray], *, fps: float, crf: int = 18, threads: int = 1) -> int:
    """Encode RGB uint8 ``H×W×3`` frames (even H and W) as H.264/yuv420p into ``path``; returns the frame count.

    The file appears only when complete. ``threads=1`` makes the output bit-identical across runs.
    """
    count = 0
    with _temp_next_to(path) as tmp:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = None
            for frame_array in frames:
                if stream is None:
                    rate = Fraction(fps).limit_denominator(1001)
                    stream = container.add_stream("libx264", rate=rate)
                    stream.time_base = 1 / rate
                    stream.height, stream.width = frame_array.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    stream.codec_context.thread_count = threads
                    stream.options = {"crf": str(crf)}
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
