"""The exact PyAV path: frames at given indices of a video whose frame timeline is known (its frame index).

Frames are numbered one way per file, as the timeline says: by timestamp where every frame has a distinct
increasing one (seek to the last keyframe packet at or before the first wanted frame, check the seek landed on
a keyframe the timeline knows, look each decoded frame's timestamp up, drop an open GOP's leading frames, skip
non-reference frames before the first wanted one where the decoder allows it), else by counting from the start
of the file. Timelines built by decoding carry a CRC of every frame: each returned frame is checked against it.
A seek that lands elsewhere, or any disagreement, restarts the decode from the beginning; a frame that still
does not come out is a :class:`DecodeError`, never a neighbour. Torch-free (runs in the decode helper).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from .videofile import DecodeError, frame_crc, open_pyav, short_error

__all__ = ["Timeline", "decode_pyav", "SKIPS_NONREF"]


class Timeline(Protocol):
    """What the exact path needs to know about a video (:class:`~video_nl.data.frame_index.FrameIndex` is one)."""

    num_frames: int
    pts: tuple[int | None, ...]
    seek_pts: tuple[int, ...]
    crc: tuple[int, ...] | None

    @property
    def numbering(self) -> str: ...

    @property
    def seekable(self) -> bool: ...

    def frame_at(self, pts: int) -> int | None: ...

    def is_seek_point(self, pts: int) -> bool: ...

    def seek_target(self, frame: int) -> int | None: ...


#: Decoders that apply ``skip_frame = NONREF`` to the packet being sent (others, e.g. libdav1d, apply it to
#: frames still in flight and would drop wanted frames).
SKIPS_NONREF = ("h264", "hevc", "mpeg4", "mpeg1video", "mpeg2video", "vp9")


class _Restart(Exception):
    """A seek landed where the index cannot vouch for the frames: decode again from the start."""


def decode_pyav(path: str, wanted: list[int], index: Timeline,
                threads: int = 1) -> tuple[dict[int, np.ndarray], int]:
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


def _decode_pyav_once(path: str, wanted: list[int], index: Timeline, threads: int,
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


def _by_timestamp(path: str, container, stream, wanted: list[int], index: Timeline,
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
              index: Timeline) -> tuple[dict[int, np.ndarray], int]:
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


def _rgb_if_indexed(frame, index: Timeline, i: int | None) -> np.ndarray | None:
    """``frame`` as RGB when it is the index's frame ``i`` (checked by pixel CRC on decode-built indexes)."""
    if i is None or (index.crc is not None and frame_crc(frame) != index.crc[i]):
        return None
    return frame.to_ndarray(format="rgb24", threads=1)
