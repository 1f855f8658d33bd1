"""Frame-exact video decoding with decord and PyAV, numpy only (no torch: it also runs in the decode subprocess).

Frame ``i`` is the ``i``-th frame of a plain sequential decode (see :mod:`video_nl.data.frame_index`). Every
decode starts from the video's :class:`~video_nl.data.frame_index.FrameIndex`: the sampler sees the true frame
count, and the index routes the file:

* **decord** (the default backend) where the index found decord's random access exact for this file: one
  ``get_batch`` of the exact (unique) indices;
* the **exact PyAV path** (:mod:`video_nl.data.pyav_exact`) everywhere else, and for ``backend="pyav"``.

Readers are opened once per call and closed before returning.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .frame_index import FrameIndex, decord_message, load_index
from .pyav_exact import decode_pyav
from .videofile import DecodeError, VideoInfo, check_file

__all__ = ["DecodeError", "DecodeResult", "FixedIndices", "IndexFn", "VideoInfo", "check_file", "decode_local",
           "decode_video"]

#: A sampler maps the video's :class:`VideoInfo` to the frame indices to decode (called inside the decoder,
#: with the true frame count from the video's frame index).
IndexFn = Callable[["VideoInfo"], Sequence[int]]


@dataclass(frozen=True)
class FixedIndices:
    """An :data:`IndexFn` that asks for fixed frame indices. Defined here, in a torch-free module, because
    index functions are unpickled in the decode helper process, which must not import torch."""

    indices: tuple[int, ...]

    def __call__(self, info: VideoInfo) -> tuple[int, ...]:
        return self.indices


@dataclass
class DecodeResult:
    """Frames (``K×H×W×3`` uint8) at ``indices``, the video's info, frames the decoder produced, the path
    that decoded them (``route``: ``decord`` or ``pyav``) and a note when decord failed and PyAV was used."""

    frames: np.ndarray
    indices: list[int]
    info: VideoInfo
    decoded: int
    fallback: str = ""
    route: str = ""


def decode_video(path: str, index_fn: IndexFn, backend: str = "decord", threads: int = 1,
                 index_dir: str | None = None) -> DecodeResult:
    """Load (or build) the frame index of ``path`` from ``index_dir``, then :func:`decode_local`."""
    check_file(path)
    return decode_local(path, index_fn, backend, threads, load_index(path, index_dir))


def decode_local(path: str, index_fn: IndexFn, backend: str, threads: int, index: FrameIndex) -> DecodeResult:
    """Decode in this process the frames ``index_fn(index.info)`` asks for, routed by ``index`` (see the module
    docstring); when decord fails on a file it is exact on, PyAV decodes it (``fallback`` says why)."""
    if backend not in ("decord", "pyav"):
        raise ValueError(f"unknown decoding backend {backend!r} (decord or pyav)")
    info = index.info
    indices = _checked(path, index_fn(info), info)
    wanted = sorted(set(indices))
    fallback = ""
    if backend == "decord" and index.decord_exact:
        try:
            batch = decode_decord(path, wanted, index, threads)
        except DecodeError as e:
            fallback = e.reason
        else:
            position = {i: k for k, i in enumerate(wanted)}
            return DecodeResult(batch[[position[i] for i in indices]], indices, info, len(wanted), route="decord")
    frames, decoded = decode_pyav(path, wanted, index, threads)
    return DecodeResult(np.stack([frames[i] for i in indices]), indices, info, decoded, fallback, "pyav")


def decode_decord(path: str, wanted: list[int], index: FrameIndex, threads: int = 1) -> np.ndarray:
    """Frames at sorted unique ``wanted`` (``K×H×W×3``) with one decord ``get_batch``."""
    import decord

    try:
        reader = decord.VideoReader(path, num_threads=max(threads, 1))
    except Exception as e:  # decord raises RuntimeError / DECORDError
        raise DecodeError(path, f"decord cannot open it ({decord_message(e)})") from None
    try:
        if len(reader) != index.num_frames:  # never trust a reader that disagrees with the index
            raise DecodeError(path, f"decord counts {len(reader)} frames, the frame index {index.num_frames}")
        try:
            return reader.get_batch(wanted).asnumpy()
        except Exception as e:  # decord fails at indices past the decodable end
            raise DecodeError(path, f"decord get_batch failed ({decord_message(e)})") from None
    finally:
        del reader


def _checked(path: str, indices: Sequence[int], info: VideoInfo) -> list[int]:
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no frame indices requested")
    if min(indices) < 0 or max(indices) >= info.num_frames:
        raise DecodeError(path, f"frame indices {min(indices)}..{max(indices)} are out of range: the video has "
                                f"{info.num_frames} frames (valid indices 0..{info.num_frames - 1})")
    return indices
