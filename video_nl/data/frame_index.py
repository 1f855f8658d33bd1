"""The per-video frame index: what frame ``i`` of a video is, and how each backend reaches it exactly.

Definition: frame ``i`` is the ``i``-th frame a plain sequential decode of the first video stream yields (in
presentation order); the frame count is how many frames that decode yields.

A :class:`FrameIndex` holds the true frame count, each frame's presentation timestamp (pts), the keyframes,
the timestamps a seek may target, and whether decord's random access is exact on this file. It is built

* by a **packet scan** (demux only, no decoding: milliseconds) where the container stores a timestamp per
  frame — mp4/mov and Matroska/WebM whose packets all carry distinct pts, start with a keyframe, agree with
  the header's sample count and are not DivX-style packed B-frames; packets an edit list discards are left
  out, as the decoder drops their frames;
* by **decoding** everywhere else (AVI, MPEG program/transport streams, raw streams, packed B-frames, missing
  or repeated timestamps, damaged headers): the frames' pts and a CRC-32 of each frame's pixels are recorded,
  so the exact PyAV path can verify every frame it returns; seeking is allowed only where seeks to the
  keyframes were seen to land on them (not in MPEG program streams, which have no index).

decord is exact on a file when its own frame list agrees with the index — same count, same timestamps, and
keyframes at the same positions (decord reads keyframe *decode* positions as frame numbers, which breaks with
open GOPs, B-frame pyramids across GOPs and edit lists) — in a container where its seeking was verified (mp4,
Matroska/WebM, AVI; not MPEG-TS or ASF, where it returns shifted frames), and the frame it returns at a probe
position (just after the middle keyframe) is the exact PyAV path's.

Indexes are cached as small JSON files under an index folder (``DATA.FRAME_INDEX_DIR``; default: a
``frame_index`` folder beside the list, else the user's cache folder), keyed by (path, size, mtime) and the
decoder builds; a stale, unreadable or inconsistent entry is rebuilt, never trusted. Files that cannot be
indexed are cached as failures with their reason. Torch-free: it runs in the decode helper process.
"""
from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ..utils.io import atomic_write
from .pyav_exact import decode_pyav
from .videofile import DecodeError, VideoInfo, check_file, frame_crc, open_pyav, short_error

__all__ = ["FrameIndex", "build_index", "load_index", "read_cached", "is_cached", "default_index_dir", "user_cache_dir",
           "entry_path"]

log = logging.getLogger(__name__)
INDEX_VERSION = 1
SCAN_FORMATS = ("mov", "mp4", "matroska", "webm")  # containers that store one timestamp per frame
DECORD_FORMATS = SCAN_FORMATS + ("avi",)  # containers where decord's seeking was verified (tests/helpers/corpus.py)
_VOP_START = b"\x00\x00\x01\xb6"  # MPEG-4 Part 2 picture start code
_MEMO_SIZE = 2048


@dataclass(frozen=True)
class FrameIndex:
    """Frame-level facts of one video file (see the module docstring). Frame numbers are presentation order.

    ``pts[i]`` is frame ``i``'s timestamp in ``time_base`` units as a sequential decode yields it (``None``
    when the decoder gives none); ``keyframes`` are frame numbers; ``seek_pts`` are the timestamps of the
    keyframe packets a seek may land on (empty: never seek); ``crc`` holds a CRC-32 of each frame's decoded
    pixels (decode-built indexes only); ``method`` is ``scan`` or ``decode`` and ``note`` says why a decode
    was needed; ``container_frames`` is the frame count the header states (``container_frames_from`` =
    ``header``) or its duration × frame rate gives (``duration``), 0 when neither is known; ``fps`` is the
    stream's average rate, or the timestamps' rate when those disagree by more than 1% (variable frame rate);
    ``decode_error`` is set when the sequential decode ended with an error instead of the end of file.
    """

    path: str
    size: int
    mtime_ns: int
    build: str
    num_frames: int
    fps: float
    height: int
    width: int
    time_base: tuple[int, int]
    pts: tuple[int | None, ...]
    keyframes: tuple[int, ...]
    seek_pts: tuple[int, ...]
    crc: tuple[int, ...] | None
    method: str
    note: str
    container: str
    codec: str
    container_frames: int
    container_frames_from: str = ""
    decode_error: str = ""
    decord_exact: bool | None = None
    decord_note: str = ""

    @property
    def info(self) -> VideoInfo:
        """The :class:`VideoInfo` samplers see: the true frame count."""
        return VideoInfo(self.num_frames, self.fps, self.height, self.width)

    @functools.cached_property
    def numbering(self) -> str:
        """``pts`` when every frame has a distinct, increasing timestamp (frames are found by timestamp, so a
        seek is possible), else ``count`` (frames are counted from the start of the file)."""
        pts = self.pts
        if any(p is None for p in pts) or any(b <= a for a, b in zip(pts, pts[1:])):
            return "count"
        return "pts"

    @property
    def seekable(self) -> bool:
        """Whether the exact PyAV path may seek (it still checks where each seek lands)."""
        return self.numbering == "pts" and bool(self.seek_pts)

    @property
    def vfr(self) -> bool:
        """Variable frame rate: gaps between timestamps differ by more than rounding (2 ticks or 10%)."""
        if self.numbering != "pts" or self.num_frames < 3:
            return False
        gaps = sorted(b - a for a, b in zip(self.pts, self.pts[1:]))
        return gaps[-1] - gaps[0] > max(2, 0.1 * gaps[len(gaps) // 2])

    def frame_at(self, pts: int) -> int | None:
        """The frame number whose timestamp is ``pts`` (``numbering == "pts"`` only), or None."""
        i = bisect.bisect_left(self.pts, pts)
        return i if i < self.num_frames and self.pts[i] == pts else None

    def is_seek_point(self, pts: int) -> bool:
        """Whether ``pts`` is the timestamp of a keyframe packet a seek may land on."""
        i = bisect.bisect_left(self.seek_pts, pts)
        return i < len(self.seek_pts) and self.seek_pts[i] == pts

    def seek_target(self, frame: int) -> int | None:
        """The timestamp of the last keyframe packet at or before ``frame``, or None when ``frame`` lies before
        the second keyframe (decoding from the start is as short)."""
        i = bisect.bisect_right(self.seek_pts, self.pts[frame]) - 1
        return self.seek_pts[i] if i >= 1 else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (timestamps run-length encoded)."""
        data = dataclasses.asdict(self)
        data["pts"] = _encode_runs(self.pts)
        return {"version": INDEX_VERSION, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FrameIndex:
        """The index in ``data``; raises ValueError (or KeyError/TypeError) when it is malformed or inconsistent."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["pts"] = _decode_runs(values["pts"])
        values["time_base"] = tuple(values["time_base"])
        for key in ("keyframes", "seek_pts"):
            values[key] = tuple(int(v) for v in values[key])
        values["crc"] = None if values["crc"] is None else tuple(int(v) for v in values["crc"])
        index = cls(**values)
        index.validate()
        return index

    def validate(self) -> None:
        """Raise ValueError when the fields contradict each other (a corrupt cache entry)."""
        n = self.num_frames
        if n < 1 or len(self.pts) != n or (self.crc is not None and len(self.crc) != n):
            raise ValueError("frame count and per-frame fields disagree")
        if any(not 0 <= k < n for k in self.keyframes) or list(self.seek_pts) != sorted(self.seek_pts):
            raise ValueError("keyframes out of range")
        if self.method not in ("scan", "decode") or len(self.time_base) != 2 or self.time_base[1] == 0:
            raise ValueError("bad method or time base")


def _encode_runs(values: tuple[int | None, ...]) -> list | dict:
    """Integers as ``[[start, step, count], ...]`` arithmetic runs; a list holding None as ``{"list": [...]}``."""
    if any(v is None for v in values):
        return {"list": list(values)}
    runs: list[list[int]] = []
    for v in values:
        if runs and runs[-1][2] == 1:
            runs[-1][1], runs[-1][2] = v - runs[-1][0], 2
        elif runs and runs[-1][0] + runs[-1][1] * runs[-1][2] == v:
            runs[-1][2] += 1
        else:
            runs.append([v, 0, 1])
    return runs


def _decode_runs(data: Any) -> tuple[int | None, ...]:
    if isinstance(data, dict):
        return tuple(None if v is None else int(v) for v in data["list"])
    return tuple(int(start) + int(step) * k for start, step, count in data for k in range(int(count)))


# ------------------------------------------------------------------ building
@functools.lru_cache(maxsize=1)
def decoder_build() -> str:
    """The decoder builds an index is valid for (PyAV's FFmpeg libraries, and decord)."""
    import av

    try:
        import decord
        dec = decord.__version__
    except ImportError:
        dec = "none"
    libs = av.library_versions
    return (f"pyav {av.__version__} avformat {'.'.join(map(str, libs['libavformat']))} "
            f"avcodec {'.'.join(map(str, libs['libavcodec']))}; decord {dec}")


def build_index(path: str, *, check_decord: bool = True) -> FrameIndex:
    """Index ``path`` (packet scan where timestamps allow, else a sequential decode), then test decord on it.

    Raises:
        DecodeError: missing, not a video, no video stream, or no frame decodes.
    """
    check_file(path)
    stat = os.stat(path)
    container, stream = open_pyav(path)
    try:
        facts = _stream_facts(container, stream)
        timeline = _scan(container, stream)
    finally:
        container.close()
    if isinstance(timeline, str):  # the reason the packets cannot be trusted
        timeline = {**_decode(path), "note": timeline}
        if timeline["seek_pts"] and not _seeks_land(path, timeline["seek_pts"]):
            timeline["seek_pts"] = ()  # e.g. MPEG program streams: seeks land between keyframes
    measured = _rate_from_pts(timeline["pts"], facts["time_base"])
    if not facts["fps"] or (measured and abs(measured - facts["fps"]) > 0.01 * facts["fps"]):
        facts["fps"] = measured or 30.0
    index = FrameIndex(path=os.path.abspath(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                       build=decoder_build(), **facts, **timeline)
    index.validate()
    if check_decord:
        exact, note = _decord_check(path, index)
        index = dataclasses.replace(index, decord_exact=exact, decord_note=note)
    return index


def _rate_from_pts(pts: tuple[int | None, ...], time_base: tuple[int, int]) -> float:
    """Frames per second from the first and last timestamps (0 when they cannot tell)."""
    if len(pts) < 2 or pts[0] is None or pts[-1] is None or pts[-1] <= pts[0]:
        return 0.0
    return (len(pts) - 1) / float((pts[-1] - pts[0]) * Fraction(*time_base))


def _stream_facts(container, stream) -> dict[str, Any]:
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    tb = stream.time_base or Fraction(1, 1)
    if stream.duration:
        seconds = float(stream.duration * tb)
    else:
        seconds = (container.duration or 0) / 1e6
    claimed = int(stream.frames) if stream.frames else round(seconds * fps)
    source = "header" if stream.frames else "duration" if claimed else ""
    return {"fps": fps, "height": stream.height, "width": stream.width, "time_base": (tb.numerator, tb.denominator),
            "container": container.format.name, "codec": stream.codec_context.name, "container_frames": claimed,
            "container_frames_from": source}


def _scan(container, stream) -> dict[str, Any] | str:
    """The timeline from demuxed packets alone, or the reason the packets cannot be trusted for it."""
    if not set(container.format.name.split(",")) & set(SCAN_FORMATS):
        return f"{container.format.name.split(',')[0]} container: timestamps are not stored per frame"
    packets = []
    check_packing = stream.codec_context.name == "mpeg4"
    try:
        for p in container.demux(stream):
            if not p.size:
                continue
            if check_packing and bytes(p).count(_VOP_START) > 1:
                return "packed B-frames (DivX-style): packets and frames differ"
            packets.append((p.pts, p.is_keyframe, p.is_discard))
    except Exception as e:  # a damaged container: libav raises InvalidDataError and friends
        return f"damaged container ({short_error(e)})"
    if not packets:
        return "no video packets"
    if any(pts is None for pts, _, _ in packets):
        return "packets without timestamps"
    if not packets[0][1]:
        return "the stream does not start with a keyframe"
    if stream.frames and stream.frames != len(packets):
        return f"the header lists {stream.frames} frames but {len(packets)} are stored"
    shown = sorted(pts for pts, _, discard in packets if not discard)
    if not shown or len(set(shown)) != len(shown):
        return "repeated timestamps" if shown else "every frame is cut by the edit list"
    position = {pts: i for i, pts in enumerate(shown)}
    keyframes = sorted(position[pts] for pts, key, discard in packets if key and not discard)
    seek_pts = sorted({pts for pts, key, _ in packets if key})
    return {"num_frames": len(shown), "pts": tuple(shown), "keyframes": tuple(keyframes), "seek_pts": tuple(seek_pts),
            "crc": None, "method": "scan", "note": "", "decode_error": ""}


def _decode(path: str) -> dict[str, Any]:
    """The timeline from a sequential decode (pts, keyframes and pixel CRCs of every frame)."""
    container, stream = open_pyav(path)
    pts: list[int | None] = []
    keyframes: list[int] = []
    crcs: list[int] = []
    error = ""
    try:
        for frame in container.decode(stream):
            if frame.key_frame:
                keyframes.append(len(pts))
            pts.append(frame.pts)
            crcs.append(frame_crc(frame))
    except Exception as e:  # damaged data: a plain sequential decode ends here
        error = short_error(e)
    finally:
        container.close()
    if not pts:
        raise DecodeError(path, "undecodable frames (no frame could be decoded" + (f": {error})" if error else ")"))
    ordered = all(p is not None for p in pts) and all(b > a for a, b in zip(pts, pts[1:]))
    return {"num_frames": len(pts), "pts": tuple(pts), "keyframes": tuple(keyframes),
            "seek_pts": tuple(pts[k] for k in keyframes) if ordered else (), "crc": tuple(crcs),
            "method": "decode", "decode_error": error}


def _seeks_land(path: str, seek_pts: tuple[int, ...], most: int = 64) -> bool:
    """Whether seeking to keyframe timestamps (up to ``most`` of them, spread over the file) lands on a keyframe
    packet the index knows, at or before the target (checked on the first packet; nothing is decoded)."""
    targets = seek_pts[1:][:: max(1, len(seek_pts) // most)]
    known = set(seek_pts)
    container, stream = open_pyav(path)
    try:
        for target in targets:
            container.seek(target, stream=stream, backward=True, any_frame=False)
            first = next((p for p in container.demux(stream) if p.size), None)
            if first is None or not first.is_keyframe or first.pts not in known or first.pts > target:
                return False
        return True
    except Exception:  # a demuxer that cannot seek at all
        return False
    finally:
        container.close()


def _decord_check(path: str, index: FrameIndex) -> tuple[bool | None, str]:
    """Whether decord's random access returns the index's frames. decord seeks to its ``key_indices`` and
    counts frames from there, so its frame count, timestamps and keyframe positions must all agree with the
    index; the container must be one where its seeking was verified; and the frame it returns at a probe
    position must be the one the exact PyAV path returns."""
    try:
        import decord
    except ImportError:
        return None, "decord is not installed"
    if not set(index.container.split(",")) & set(DECORD_FORMATS):
        return False, f"decord's seeking is not verified on {index.container.split(',')[0]} files"
    try:
        reader = decord.VideoReader(path, num_threads=1)
    except Exception as e:  # decord raises DECORDError / RuntimeError
        return False, f"decord cannot open it ({decord_message(e)})"
    try:
        disagreement = _decord_disagreement(reader, index)
        if not disagreement:
            disagreement = _decord_pixels_disagree(path, reader, index)
        return not disagreement, disagreement
    except Exception as e:  # decord failing on the probe frames
        return False, f"decord failed on probe frames ({decord_message(e)})"
    finally:
        del reader


def _decord_disagreement(reader, index: FrameIndex) -> str:
    """How decord's frame list differs from the index ("" when it agrees)."""
    count = len(reader)
    if count != index.num_frames:
        return f"decord counts {count} frames, a sequential decode gives {index.num_frames}"
    if index.numbering != "pts":
        return "frame timestamps are missing, repeated or out of order"
    tb = index.time_base[0] / index.time_base[1]
    ours = [(p - index.pts[0]) * tb for p in index.pts]
    theirs = reader.get_frame_timestamp(list(range(count)))[:, 0]
    tolerance = min((b - a for a, b in zip(ours, ours[1:])), default=1.0) / 2
    if any(abs((t - theirs[0]) - o) > tolerance for t, o in zip(theirs, ours)):
        return "decord's frame timestamps differ from the decoded ones"
    if [int(k) for k in reader.get_key_indices()] != list(index.keyframes):
        return "decord would seek to wrong keyframes (keyframe decode and display positions differ)"
    return ""


def _decord_pixels_disagree(path: str, reader, index: FrameIndex) -> str:
    """Compare decord's frame with the exact PyAV path's at one probe: the frame after the middle keyframe (a
    seek, then decoding on), or frame 0 when there is one keyframe. Within one grey level on average: the two
    FFmpeg builds may round colours differently."""
    keys = index.keyframes
    probe = min(keys[len(keys) // 2] + 1, index.num_frames - 1) if len(keys) > 1 else 0
    theirs = reader.get_batch([probe]).asnumpy()[0].astype(np.int16)
    ours = decode_pyav(path, [probe], index)[0][probe].astype(np.int16)
    if ours.shape != theirs.shape or np.abs(ours - theirs).mean() > 1.0:
        return f"decord returns another picture for frame {probe}"
    return ""


def decord_message(error: BaseException) -> str:
    """decord's error text without its ``[time] source.cc:line:`` prefix (first line, 160 characters)."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", lines[0])[:160]


# ------------------------------------------------------------------ cache
def user_cache_dir() -> str:
    """``$VIDEO_NL_CACHE_DIR`` or ``$XDG_CACHE_HOME/video_nl`` (``~/.cache/video_nl``), plus ``frame_index``."""
    root = os.environ.get("VIDEO_NL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "video_nl")
    return os.path.join(root, "frame_index")


def default_index_dir(list_path: str | None = None) -> str:
    """``frame_index`` beside ``list_path`` when it exists or can be made there, else :func:`user_cache_dir`."""
    if list_path:
        folder = os.path.join(os.path.dirname(os.path.abspath(list_path)), "frame_index")
        if os.path.isdir(folder) or os.access(os.path.dirname(folder), os.W_OK):
            return folder
    return user_cache_dir()


def entry_path(index_dir: str, path: str) -> str:
    """The cache file of video ``path`` in ``index_dir`` (named by a hash of its absolute path)."""
    digest = hashlib.sha1(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()
    return os.path.join(index_dir, digest[:2], digest[2:24] + ".json")


_memo: collections.OrderedDict[str, tuple[tuple, FrameIndex | str]] = collections.OrderedDict()
_memo_lock = threading.Lock()
_unwritable: set[str] = set()


def load_index(path: str, index_dir: str | None = None, *, rebuild: bool = False) -> FrameIndex:
    """The frame index of ``path`` from ``index_dir`` (default :func:`user_cache_dir`), built and saved when it
    is missing, stale (size, mtime or decoder builds changed), unreadable or inconsistent, or when ``rebuild``.

    Raises:
        DecodeError: the file cannot be indexed (also when that was found before and cached).
    """
    check_file(path)
    index_dir = index_dir or user_cache_dir()
    key = _file_key(path)
    entry = entry_path(index_dir, path)
    cached = None if rebuild else _remembered(entry, key) or _read_entry(entry, key)
    if cached is None:
        try:
            cached = build_index(path)
        except DecodeError as e:
            cached = e.reason
        _write_entry(entry, index_dir, cached, key)
    _remember(entry, key, cached)
    if isinstance(cached, str):
        raise DecodeError(path, cached)
    return cached


def read_cached(path: str, index_dir: str | None = None) -> FrameIndex | None:
    """The index of ``path`` when ``index_dir`` holds a valid entry for the file as it is now, else None (the
    video is not opened).

    Raises:
        DecodeError: the entry records that the file cannot be indexed.
    """
    try:
        key = _file_key(path)
    except OSError:
        return None
    cached = _read_entry(entry_path(index_dir or user_cache_dir(), path), key)
    if isinstance(cached, str):
        raise DecodeError(path, cached)
    return cached


def is_cached(path: str, index_dir: str | None = None) -> bool:
    """Whether ``index_dir`` holds a valid entry (index or failure) for ``path`` as it is now."""
    try:
        return read_cached(path, index_dir) is not None
    except DecodeError:
        return True


def _file_key(path: str) -> tuple[str, int, int]:
    """What a cache entry is valid for: the file's absolute path, size and modification time (ns)."""
    stat = os.stat(path)
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns


def _remembered(entry: str, key: tuple) -> FrameIndex | str | None:
    with _memo_lock:
        hit = _memo.get(entry)
        if hit is None or hit[0] != key:
            return None
        _memo.move_to_end(entry)
        return hit[1]


def _remember(entry: str, key: tuple, value: FrameIndex | str) -> None:
    with _memo_lock:
        _memo[entry] = (key, value)
        _memo.move_to_end(entry)
        while len(_memo) > _MEMO_SIZE:
            _memo.popitem(last=False)


def _read_entry(entry: str, key: tuple) -> FrameIndex | str | None:
    """The cached index (or failure reason) when the entry matches ``key`` and the current decoder builds."""
    try:
        with open(entry, encoding="utf-8") as f:
            data = json.load(f)
        if (data.get("version") != INDEX_VERSION or (data.get("path"), data.get("size"), data.get("mtime_ns")) != key
                or data.get("build") != decoder_build()):
            return None
        if "failure" in data:
            return str(data["failure"])
        return FrameIndex.from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # a corrupt entry: rebuilt
        log.debug("frame index entry %s is unreadable (%s); rebuilding it", entry, short_error(e))
        return None


def _write_entry(entry: str, index_dir: str, value: FrameIndex | str, key: tuple) -> None:
    if isinstance(value, str):
        data = {"version": INDEX_VERSION, "path": key[0], "size": key[1], "mtime_ns": key[2],
                "build": decoder_build(), "failure": value}
    else:
        data = value.to_json()
    try:
        with atomic_write(entry, "w", durable=False) as f:
            json.dump(data, f, separators=(",", ":"))
    except Exception as e:  # a read-only or full index folder: the index still serves this process
        if index_dir not in _unwritable:
            _unwritable.add(index_dir)
            log.warning("cannot write the frame index in %s (%s); indexes are rebuilt each run", index_dir,
                        short_error(e))


def hint_unindexed(paths: list[str], index_dir: str, list_path: str) -> None:
    """Log once how to build the index ahead when some of ``paths`` (a sample of a list) have no entry yet."""
    missing = sum(not os.path.exists(entry_path(index_dir, p)) for p in paths if os.path.exists(p))
    if missing:
        log.info("%d of %d sampled videos of %s have no frame index in %s yet: each is indexed on first use; "
                 "`video-nl check-videos %s` builds it ahead and reports problem files", missing, len(paths),
                 list_path, index_dir, list_path)


def forget(path: str | None = None) -> None:
    """Drop remembered indexes (of ``path``, or all): the next :func:`load_index` reads the disk cache again."""
    with _memo_lock, contextlib.suppress(KeyError):
        if path is None:
            _memo.clear()
        else:
            for entry in [e for e, (k, _) in _memo.items() if k[0] == os.path.abspath(path)]:
                del _memo[entry]
