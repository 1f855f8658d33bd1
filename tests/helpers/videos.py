"""Write small real mp4 files for tests (PyAV, H.264 by default).

Frames are ``uint8`` arrays of shape ``T×H×W×3`` (RGB). Keep videos tiny (32–64 px, 8–24 frames):
the CI machine has 2 cores shared by many test sessions.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np


def write_mp4(path: str | os.PathLike, frames: np.ndarray, *, fps: int = 8, codec: str = "libx264",
              crf: int = 18, gop: int | None = None, bframes: int | None = None,
              pts: Sequence[int] | None = None, time_base: Fraction | None = None, faststart: bool = False,
              options: dict[str, str] | None = None, container_format: str | None = None,
              pix_fmt: str = "yuv420p") -> str:
    """Encode ``frames`` (uint8 ``T×H×W×3``, even H and W for yuv420p) into ``path``; returns the path.

    ``gop`` sets the keyframe interval and ``bframes`` the most consecutive B-frames (default: the encoder's).
    Frame ``i`` gets pts ``pts[i]`` in ``time_base`` units (default: ``i`` in 1/fps units, a constant rate);
    ``faststart`` puts the mp4 index (moov) before the media data. The container follows the file extension
    unless ``container_format`` names one (``mpeg``, ``vob``, ``h264``, ...); ``options`` are encoder options
    (e.g. ``{"x264-params": "open-gop=1"}``).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 T×H×W×3, got {frames.dtype} {frames.shape}")
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with av.open(path, mode="w", format=container_format,
                 options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = pix_fmt
        tb = time_base or Fraction(1, fps)  # the muxer rewrites stream.time_base at the header: keep ours
        stream.time_base = tb
        stream.codec_context.time_base = tb
        if gop is not None:
            stream.codec_context.gop_size = gop
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        stream.options = {**({"crf": str(crf)} if codec == "libx264" else {}), **(options or {})}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i if pts is None else pts[i]
            frame.time_base = tb
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def block_frames(num_frames: int, size: int | tuple[int, int], seed: int) -> np.ndarray:
    """Blocky random colour pattern moving one pixel right per frame: uint8 ``T×H×W×3``, ``size`` = H or (H, W).

    Compresses well and makes every frame distinct, so index mix-ups show up in comparisons."""
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    big = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
    return np.stack([np.roll(big, shift=t, axis=1)[:h, :w] for t in range(num_frames)])


def random_video(path: str | os.PathLike, num_frames: int = 16, size: int | tuple[int, int] = 32,
                 seed: int = 0, *, fps: int = 8) -> np.ndarray:
    """Write a smooth random video (blocky colour pattern that moves) to ``path``; return its frames.

    ``size`` is ``H`` (square) or ``(H, W)``; the pattern is :func:`block_frames`, plus a top-left 4×4 patch
    whose grey level rises with the frame index. Returned frames are the *source* frames (before compression).
    """
    frames = block_frames(num_frames, size, seed)
    frames[:, :4, :4] = (np.arange(num_frames, dtype=np.int64) * 255 // max(num_frames - 1, 1))[:, None, None, None]
    write_mp4(path, frames, fps=fps)
    return frames


def write_audio_only(path: str | os.PathLike) -> str:
    """An mp4/m4a file holding one AAC stream (1 s of a 440 Hz tone) and no video stream; returns the path."""
    path = os.fspath(path)
    rate = 44100
    with av.open(path, mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        t = np.arange(rate, dtype=np.float32) / rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        step = 1024
        for start in range(0, rate, step):
            chunk = samples[None, start:start + step]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
