"""Frame-exact video decoding with decord and PyAV, numpy only (no torch: it also runs in the decode subprocess).

Frame ``i`` is the ``i``-th frame of a plain sequential decode (see :mod:`video_nl.data.frame_index`). Every
decode starts from the video's :class:`~video_nl.data.frame_index.FrameIndex`: the sampler sees the true frame
count, and the index routes the file:

* **decord** (the default backend) where the index found decord's random access exact for this file: one
  ``get_batch`` of the exact (unique) indices;
* the **exact PyAV path** everywhere else, and for ``backend="pyav"``. Frames are numbered one way per file,
  as the index says: by timestamp where every frame has a distinct increasing one (seek to the last keyframe
  packet before the first wanted frame, check the seek landed on a keyframe the index knows, look each
  decoded frame's timestamp up in the index, skip non-reference frames before the first wanted one where the
  decoder allows it), else by
  counting from the start of the file. Decode-built indexes carry a CRC of every frame: each returned frame
  is checked against it. A seek that lands elsewhere, or any disagreement, restarts the decode from the
  beginning; a frame that still does not come out is a :class:`DecodeError`, never a neighbour.

Readers are opened once per call and closed before returning.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .frame_index import FrameIndex, decord_message, frame_crc, load_index
from .videofile import DecodeError, VideoInfo, check_file, open_pyav, short_error

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


#: Decoders that apply ``skip_frame = NONREF`` to the packet being sent (others, e.g. libdav1d, apply it to
#: frames still in flight and would drop wanted frames).
SKIPS_NONREF = ("h264", "hevc", "mpeg4", "mpeg1video", "mpeg2video", "vp9")


class _Restart(Exception):
    """A seek landed where the index cannot vouch for the frames: decode again from the start."""


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


def decode_pyav(path: str, wanted: list[int], index: FrameIndex, threads: int = 1) -> tuple[dict[int, np.ndarray], int]:
    """Frames at sorted unique ``wanted`` by the exact PyAV path; returns (index -> frame, frames decoded)."""
    target = index.seek_target(wanted[0]) if index.seekable else None
    decoded = 0
    if target is not None:
        try:
            return _decode_pyav_once(path, wanted, index, threads, target)
        except _Restart as restart:
            decoded = restart.args[0]
    frames, more = _decode_pyav_once(path, wanted, index, threads, None)
    return frames, decoded + more


def _decode_pyav_once(path: str, wanted: list[int], index: FrameIndex, threads: int,
                      target: int | None) -> tuple[dict[int, np.ndarray], int]:
    """One pass: from the keyframe packet at timestamp ``target`` (or the start when None)."""
    container, stream = open_pyav(path, threads)
    try:
        if index.numbering == "pts":
            frames, decoded = _by_timestamp(path, container, stream, wanted, index, target)
        else:
            frames, decoded = _by_count(path, container, stream, wanted, index)
    except (DecodeError, _Restart):
        raise
    except Exception as e:  # damaged packets: libav raises InvalidDataError and friends
        raise DecodeError(path, f"undecodable frames ({short_error(e)})") from None
    finally:
        container.close()
    missing = [i for i in wanted if i not in frames]
    if missing and target is not None:
        raise _Restart(decoded)
    if missing:
        raise DecodeError(path, f"undecodable frames (frames {missing[:5]} of {index.num_frames} never came out "
                                f"of the decoder)")
    return frames, decoded


def _by_timestamp(path: str, container, stream, wanted: list[int], index: FrameIndex,
                  target: int | None) -> tuple[dict[int, np.ndarray], int]:
    """Frames numbered by looking their timestamps up in the index. After a seek the first packet must be a
    keyframe the index knows, and frames shown before it (an open GOP's leading frames) are dropped."""
    keep, last, first_pts = set(wanted), wanted[-1], index.pts[wanted[0]]
    codec = stream.codec_context
    skip_run_up = codec.name in SKIPS_NONREF
    if target is not None:
        container.seek(target, stream=stream, backward=True, any_frame=False)
    landing = None
    out: dict[int, np.ndarray] = {}
    decoded = 0
    for packet in container.demux(stream):
        if target is not None and landing is None and packet.size:
            landed_well = packet.is_keyframe and packet.pts is not None and packet.pts <= target
            if not landed_well or not index.is_seek_point(packet.pts):
                raise _Restart(decoded)
            landing = packet.pts
        if skip_run_up:  # frames shown before the first wanted one only matter as references
            codec.skip_frame = "NONREF" if packet.pts is not None and packet.pts < first_pts else "DEFAULT"
        for frame in packet.decode():
            decoded += 1
            if landing is not None and frame.pts is not None and frame.pts < landing:
                continue
            i = None if frame.pts is None else index.frame_at(frame.pts)
            rgb = _rgb_if_indexed(frame, index, i) if i in keep else None
            if i is None or (i in keep and rgb is None):
                if target is not None:
                    raise _Restart(decoded)
                raise DecodeError(path, f"a decoded frame (timestamp {frame.pts}) does not match the frame index "
                                        f"(frame {i})")
            if i in keep:
                out[i] = rgb
            if i >= last:
                return out, decoded
    return out, decoded


def _by_count(path: str, container, stream, wanted: list[int],
              index: FrameIndex) -> tuple[dict[int, np.ndarray], int]:
    """Frames numbered by counting from the start of the file (files without usable timestamps)."""
    keep, last = set(wanted), wanted[-1]
    out: dict[int, np.ndarray] = {}
    i = -1
    for frame in container.decode(stream):
        i += 1
        if i in keep:
            rgb = _rgb_if_indexed(frame, index, i)
            if rgb is None:
                raise DecodeError(path, f"decoded frame {i} differs from the frame index's frame {i}")
            out[i] = rgb
        if i >= last:
            break
    return out, i + 1


def _rgb_if_indexed(frame, index: FrameIndex, i: int | None) -> np.ndarray | None:
    """``frame`` as RGB when it is the index's frame ``i`` (checked by pixel CRC on decode-built indexes)."""
    if i is None or (index.crc is not None and frame_crc(frame) != index.crc[i]):
        return None
    return frame.to_ndarray(format="rgb24", threads=1)


def _checked(path: str, indices: Sequence[int], info: VideoInfo) -> list[int]:
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no frame indices requested")
    if min(indices) < 0 or max(indices) >= info.num_frames:
        raise DecodeError(path, f"frame indices {min(indices)}..{max(indices)} are out of range: the video has "
                                f"{info.num_frames} frames (valid indices 0..{info.num_frames - 1})")
    return indices
