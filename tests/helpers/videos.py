"""Write small real mp4 files for tests (PyAV, H.264 by default).

Frames are ``uint8`` arrays of shape ``T×H×W×3`` (RGB). Keep videos tiny (32–64 px, 8–24 frames):
the CI machine has 2 cores shared by many test sessions.
"""
from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np


def write_mp4(path: str | os.PathLike, frames: np.ndarray, *, fps: int = 8, codec: str = "libx264",
              crf: int = 18, gop: int | None = None, bframes: int | None = None) -> str:
    """Encode ``frames`` (uint8 ``T×H×W×3``, even H and W for yuv420p) into ``path``; returns the path.

    ``gop`` sets the keyframe interval and ``bframes`` the most consecutive B-frames (default: the encoder's).
    Every frame gets pts = index in 1/fps units.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 T×H×W×3, got {frames.dtype} {frames.shape}")
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        options = {"crf": str(crf)} if codec == "libx264" else {}
        if gop is not None:
            stream.codec_context.gop_size = gop
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        stream.options = options
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def random_video(path: str | os.PathLike, num_frames: int = 16, size: int | tuple[int, int] = 32,
                 seed: int = 0, *, fps: int = 8) -> np.ndarray:
    """Write a smooth random video (blocky colour pattern that moves) to ``path``; return its frames.

    ``size`` is ``H`` (square) or ``(H, W)``. Blocky, moving content compresses well and makes
    every frame distinct, so index mix-ups show up in comparisons. Returned frames are the
    *source* frames (before compression).
    """
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    big = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
    frames = np.stack([np.roll(big, shift=t, axis=1)[:h, :w] for t in range(num_frames)])
    frames[:, :4, :4] = (np.arange(num_frames, dtype=np.int64) * 255 // max(num_frames - 1, 1))[:, None, None, None]
    write_mp4(path, frames, fps=fps)
    return frames
