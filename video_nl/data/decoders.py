"""Frame-exact video decoding with decord and PyAV, numpy only (no torch: it also runs in the decode subprocess).

Both backends return the frames at the requested *presentation-order* indices as uint8 ``K×H×W×3`` RGB and
decode only what those indices need: decord gets one ``get_batch`` of the exact (unique) indices; PyAV seeks
to the keyframe before the first index, decodes up to the last one (skipping non-reference frames before the
first) and converts only the kept frames.
Readers are opened per call and closed before returning. Container frame counts can be wrong (decord
issue #54); when frames past the real end are requested, the real count is found and the clip re-sampled.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import UserError

#: A sampler maps the video's :class:`VideoInfo` to the frame indices to decode (called inside the decoder,
#: so the indices always come from the frame count of the reader that decodes them).
IndexFn = Callable[["VideoInfo"], Sequence[int]]


@dataclass(frozen=True)
class FixedIndices:
    """An :data:`IndexFn` that asks for fixed frame indices. Defined here, in a torch-free module, because
    index functions are unpickled in the decode helper process, which must not import torch."""

    indices: tuple[int, ...]

    def __call__(self, info: VideoInfo) -> tuple[int, ...]:
        return self.indices


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


@dataclass
class DecodeResult:
    """Frames (``K×H×W×3`` uint8) at ``indices``, the reader's info, frames the decoder produced, and a note
    when the requested backend failed and another one was used."""

    frames: np.ndarray
    indices: list[int]
    info: VideoInfo
    decoded: int
    fallback: str = ""


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


def _open_pyav(path: str, threads: int):
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


def _pyav_count(container, stream) -> int:
    """Frame count from metadata, else from the number of demuxed video packets (no decoding)."""
    if stream.frames:
        return int(stream.frames)
    count = sum(1 for p in container.demux(stream) if p.size)
    container.seek(0)
    return count


def probe_pyav(path: str) -> VideoInfo:
    """Container metadata of ``path`` through PyAV (no frame is decoded)."""
    check_file(path)
    container, stream = _open_pyav(path, 1)
    try:
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 30.0
        return VideoInfo(_pyav_count(container, stream), fps, stream.height, stream.width)
    finally:
        container.close()


def _decode_pyav(path: str, wanted: list[int], threads: int) -> tuple[dict[int, np.ndarray], int, int | None]:
    """Frames at sorted unique ``wanted``; returns (index->frame, frames decoded, real count if EOF came early).

    Between the keyframe the seek lands on and the first wanted frame only reference frames are decoded
    (``skip_frame = "NONREF"`` for those packets): no other frame depends on a non-reference frame, so the
    wanted frames come out the same, and on B-frame video (x264's defaults) about half the run-up is skipped.
    """
    container, stream = _open_pyav(path, threads)
    codec = stream.codec_context
    try:
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        tb = stream.time_base
        origin = stream.start_time or 0
        first, last = wanted[0], wanted[-1]
        seekable = fps > 0 and tb is not None and first > 0
        if seekable:
            container.seek(origin + int(first / fps / tb), stream=stream, backward=True, any_frame=False)
        keep = set(wanted)
        out: dict[int, np.ndarray] = {}
        decoded, index = 0, -1
        for packet in container.demux(stream):
            if seekable:  # by presentation time: a packet before the first wanted frame is only a run-up
                early = packet.pts is not None and round(float((packet.pts - origin) * tb) * fps) < first
                codec.skip_frame = "NONREF" if early else "DEFAULT"
            for frame in packet.decode():
                decoded += 1
                if seekable and frame.pts is not None:
                    index = round(float((frame.pts - origin) * tb) * fps)
                    if index > first and not out and decoded == 1:  # seek overshot: restart from the beginning
                        container.seek(origin, stream=stream, backward=True, any_frame=False)
                        codec.skip_frame = "DEFAULT"
                        seekable, index = False, -1
                        break
                else:
                    index += 1
                if index in keep:
                    out[index] = frame.to_ndarray(format="rgb24", threads=1)
                if index >= last:
                    return out, decoded, None
        return out, decoded, index + 1
    except DecodeError:
        raise
    except Exception as e:  # damaged packets: libav raises InvalidDataError and friends
        raise DecodeError(path, f"undecodable frames ({type(e).__name__}: {str(e)[:120]})") from None
    finally:
        container.close()


def decode_pyav(path: str, index_fn: IndexFn, threads: int = 1) -> DecodeResult:
    """Decode the frames ``index_fn(info)`` asks for with PyAV (seek + decode up to the last index)."""
    info = probe_pyav(path)
    total = 0
    for _ in range(2):  # a second pass only when the container over-reports its frame count
        indices = _checked(path, index_fn(info), info)
        wanted = sorted(set(indices))
        frames, decoded, real = _decode_pyav(path, wanted, threads)
        total += decoded
        if real is None or wanted[-1] < real:
            return DecodeResult(_stack(path, frames, indices), indices, info, total)
        if real == 0:
            raise DecodeError(path, "undecodable frames (no frame could be decoded)")
        info = VideoInfo(real, info.fps, info.height, info.width)
    raise DecodeError(path, "undecodable frames (frame count keeps changing)")


def decode_decord(path: str, index_fn: IndexFn, threads: int = 1) -> DecodeResult:
    """Decode the frames ``index_fn(info)`` asks for with one decord ``get_batch`` of the exact indices."""
    import decord

    check_file(path)
    try:
        reader = decord.VideoReader(path, num_threads=max(threads, 1))
    except Exception as e:  # decord raises RuntimeError / DECORDError
        raise DecodeError(path, f"decord cannot open it ({str(e).splitlines()[0][:160]})") from None
    try:
        fps = float(reader.get_avg_fps() or 30.0)
        meta = VideoInfo(len(reader), fps, 0, 0)  # frame size comes from the decoded batch below
        indices = _checked(path, index_fn(meta), meta)
        wanted = sorted(set(indices))
        try:
            batch = reader.get_batch(wanted).asnumpy()
        except Exception as e:  # decord fails at indices past the decodable end
            raise DecodeError(path, f"decord get_batch failed ({str(e).splitlines()[0][:160]})") from None
        position = {i: k for k, i in enumerate(wanted)}
        info = VideoInfo(len(reader), fps, batch.shape[1], batch.shape[2])
        return DecodeResult(batch[[position[i] for i in indices]], indices, info, len(wanted))
    finally:
        del reader


def _checked(path: str, indices: Sequence[int], info: VideoInfo) -> list[int]:
    indices = [int(i) for i in indices]
    if info.num_frames <= 0:
        raise DecodeError(path, "undecodable frames (the video has no frames)")
    if not indices:
        raise ValueError("no frame indices requested")
    if min(indices) < 0 or max(indices) >= info.num_frames:
        raise ValueError(f"frame indices must lie in [0, {info.num_frames}), got {min(indices)}..{max(indices)}")
    return indices


def _stack(path: str, frames: dict[int, np.ndarray], indices: list[int]) -> np.ndarray:
    missing = [i for i in indices if i not in frames]
    if missing:
        raise DecodeError(path, f"undecodable frames (frames {missing[:5]} never came out of the decoder)")
    return np.stack([frames[i] for i in indices])


def decode_local(path: str, index_fn: IndexFn, backend: str = "decord", threads: int = 1) -> DecodeResult:
    """Decode in this process with ``backend``; when decord fails, retry with PyAV (``fallback`` says why)."""
    if backend == "pyav":
        return decode_pyav(path, index_fn, threads)
    if backend != "decord":
        raise ValueError(f"unknown decoding backend {backend!r} (decord or pyav)")
    check_file(path)
    try:
        return decode_decord(path, index_fn, threads)
    except DecodeError as e:
        result = decode_pyav(path, index_fn, threads)
        result.fallback = e.reason
        return result
