"""A factory of real damaged / unusual video files for the fault-injection suite.

Every kind is made for real on disk (PyAV encodes, bytes are cut or edited), never mocked. Each kind has an
expectation:

* ``BAD_KINDS`` cannot give a clip (nothing decodable): a loader must report them with a reason and substitute.
* ``ODD_KINDS`` are unusual but decodable (1 frame, variable frame rate, an mp4 named ``.avi``, a PNG named
  ``.mp4``, a header that claims 48 frames of which 26 decode): a loader may serve them or report them, but must not crash or hang.
* ``fifo`` (a named pipe named ``.mp4``: opening it blocks forever) is made only by :func:`make_fifo`; it is the
  real hang that ``DATA.DECODE_TIMEOUT_S`` exists for.

Files are tiny (32 px, 16 frames) so the suite stays fast on a shared 2-core machine.
"""
from __future__ import annotations

import os
import struct
import zlib
from fractions import Fraction

import av
import numpy as np

from helpers.videos import block_frames, write_audio_only, write_mp4  # tests/conftest.py puts tests/ on sys.path

SIZE = 32
FRAMES = 16
FPS = 8

BAD_KINDS = (
    "missing", "zero_byte", "truncated_10", "truncated_50", "truncated_90", "header_only", "random_bytes",
    "audio_only", "directory",
)
# png_as_mp4: decord refuses it, PyAV opens it as a 1-frame image stream, so a decord->PyAV loader may serve it
ODD_KINDS = ("mp4_as_avi", "png_as_mp4", "one_frame", "vfr", "overclaim")
ALL_KINDS = BAD_KINDS + ODD_KINDS
EXTENSIONS = {"mp4_as_avi": ".avi", "audio_only": ".m4a"}


def frames_for(seed: int, num_frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """Blocky moving uint8 ``T×H×W×3`` frames, distinct per frame and per seed."""
    return block_frames(num_frames, size, seed)


def make_good(path: str | os.PathLike, seed: int = 0, num_frames: int = FRAMES) -> str:
    """A good 32 px H.264 mp4, written by the shared helper."""
    return write_mp4(os.fspath(path), frames_for(seed, num_frames), fps=FPS)


def _boxes(data: bytes) -> list[tuple[str, int, int]]:
    """Top-level mp4 boxes as (type, offset, size)."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:
            size = len(data) - pos
        out.append((kind.decode("latin-1"), pos, size))
        pos += size
    return out


def _png_bytes(seed: int) -> bytes:
    """A valid 32x32 RGB PNG written by hand (zlib + CRCs), so no imaging library is needed."""
    img = frames_for(seed, 1)[0]
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(img.shape[0]))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", img.shape[1], img.shape[0], 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def make_bad(kind: str, folder: str | os.PathLike, seed: int = 0) -> str:
    """Create one file of ``kind`` (see ``ALL_KINDS``) in ``folder`` and return its path."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{kind}_{seed}{EXTENSIONS.get(kind, '.mp4')}")
    rng = np.random.default_rng(1000 + seed)
    if kind == "missing":
        return path  # never created
    if kind == "zero_byte":
        open(path, "wb").close()
    elif kind.startswith("truncated_"):
        # default (non-faststart) mp4: mdat first, moov last, so any cut loses the index
        data = _read(make_good(path + ".src.mp4", seed))
        _write(path, data[: len(data) * int(kind.split("_")[1]) // 100])
        os.remove(path + ".src.mp4")
    elif kind == "header_only":
        data = _read(write_mp4(path + ".src.mp4", frames_for(seed), fps=FPS, crf=20, faststart=True))
        mdat = next(off for name, off, _ in _boxes(data) if name == "mdat")
        _write(path, data[:mdat])  # ftyp + moov (claims 16 frames), no media data at all
        os.remove(path + ".src.mp4")
    elif kind == "overclaim":
        # moov first (claims 48 frames) then an mdat cut to 70%: the container promises more than decodes
        data = _read(write_mp4(path + ".src.mp4", frames_for(seed, 3 * FRAMES), fps=FPS, crf=20, faststart=True))
        _, off, size = next(b for b in _boxes(data) if b[0] == "mdat")
        _write(path, data[: off + size * 7 // 10])
        os.remove(path + ".src.mp4")
    elif kind == "random_bytes":
        _write(path, rng.integers(0, 256, size=20000, dtype=np.uint8).tobytes())
    elif kind == "audio_only":
        write_audio_only(path)
    elif kind == "png_as_mp4":
        _write(path, _png_bytes(seed))
    elif kind == "directory":
        os.makedirs(path, exist_ok=True)
    elif kind == "mp4_as_avi":
        make_good(path, seed)
    elif kind == "one_frame":
        make_good(path, seed, num_frames=1)
    elif kind == "vfr":
        # irregular gaps (1..4 ticks of 1/32 s) between frames: a variable-frame-rate stream
        gaps = rng.integers(1, 5, size=FRAMES)
        pts = [int(x) for x in np.concatenate([[0], np.cumsum(gaps[:-1])])]
        write_mp4(path, frames_for(seed), fps=FPS, crf=20, pts=pts, time_base=Fraction(1, 32))
    else:
        raise ValueError(f"unknown bad-video kind {kind!r}; kinds: {ALL_KINDS}")
    return path


def make_fifo(folder: str | os.PathLike, name: str = "fifo.mp4") -> str:
    """A named pipe called ``*.mp4``: opening it for reading blocks until a writer appears (a real hang).

    Call :func:`release_fifo` afterwards so no reader thread stays blocked.
    """
    path = os.path.join(os.fspath(folder), name)
    os.makedirs(os.fspath(folder), exist_ok=True)
    os.mkfifo(path)
    return path


def release_fifo(path: str) -> None:
    """Unblock readers stuck on a FIFO by opening it for writing, then closing it (they see EOF)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # no reader waiting (ENXIO) or already gone
        return
    os.close(fd)


def make_collection(folder: str | os.PathLike, kinds: tuple[str, ...] = ALL_KINDS, *, num_good: int = 4,
                    num_classes: int = 2, seed: int = 0) -> dict:
    """Good videos plus one file of each kind; returns ``{"good": [(path, label)], "bad": {kind: (path, label)}}``."""
    folder = os.fspath(folder)
    good = [(make_good(os.path.join(folder, f"good_{i}.mp4"), seed + i), i % num_classes) for i in range(num_good)]
    bad = {kind: (make_bad(kind, folder, seed), j % num_classes) for j, kind in enumerate(kinds)}
    return {"good": good, "bad": bad}


def write_list(path: str | os.PathLike, entries: list[tuple[str, int]], sep: str = " ") -> str:
    """A PySlowFast csv list (``path label`` per line)."""
    path = os.fspath(path)
    with open(path, "w") as f:
        for p, label in entries:
            f.write(f"{p}{sep}{label}\n")
    return path


def count_decodable_frames(path: str) -> int:
    """Frames PyAV actually decodes from ``path`` (0 when it cannot open it)."""
    try:
        with av.open(path) as c:
            if not c.streams.video:
                return 0
            n = 0
            try:
                for _ in c.decode(video=0):
                    n += 1
            except av.error.FFmpegError:
                pass
            return n
    except (av.error.FFmpegError, OSError):
        return 0


def claimed_frames(path: str) -> int:
    """Frames the container header claims (0 when it cannot open it)."""
    try:
        with av.open(path) as c:
            return int(c.streams.video[0].frames) if c.streams.video else 0
    except (av.error.FFmpegError, OSError):
        return 0


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


__all__ = ["ALL_KINDS", "BAD_KINDS", "ODD_KINDS", "make_bad", "make_good", "make_fifo", "release_fifo",
           "make_collection", "write_list", "count_decodable_frames", "claimed_frames", "frames_for"]
