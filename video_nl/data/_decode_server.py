"""Decode helper process (started by :mod:`video_nl.data.decoding`): answers requests read from a pipe.

Protocol: each message is an 8-byte little-endian length and a pickle. Requests:

* ``("decode", path, index_fn, backend, threads, index_dir)`` → ``("frames", (DecodeResult without frames,
  frames shape))``, the uint8 frames written at the start of the shared-memory file (a memfd the caller
  passes), so megabytes of pixels are copied once each way instead of being pickled through the pipe;
* ``("index", path, index_dir, rebuild)`` → ``("ok", FrameIndex)``.

Failures answer ``("error", reason)`` for a :class:`DecodeError` or ``("bug", traceback)`` for anything else.
The process exits when its request pipe closes.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import sys
import traceback

import numpy as np

from .decoders import DecodeError, DecodeResult, decode_video
from .frame_index import load_index


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 22))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _share_frames(result: DecodeResult, frames_fd: int) -> tuple[DecodeResult, tuple[int, ...]]:
    """Write ``result.frames`` at offset 0 of ``frames_fd``; return the result without them and their shape."""
    frames = np.ascontiguousarray(result.frames, dtype=np.uint8)
    view, offset = memoryview(frames).cast("B"), 0
    while offset < len(view):
        offset += os.pwrite(frames_fd, view[offset:], offset)
    return dataclasses.replace(result, frames=None), frames.shape


def _answer(request: tuple, frames_fd: int) -> tuple[str, object]:
    kind, *args = request
    try:
        if kind == "decode":
            return "frames", _share_frames(decode_video(*args), frames_fd)
        if kind == "index":
            path, index_dir, rebuild = args
            return "ok", load_index(path, index_dir, rebuild=rebuild)
        raise ValueError(f"unknown request {kind!r}")
    except DecodeError as e:
        return "error", e.reason
    except Exception:  # reported to the caller, which raises it with this traceback
        return "bug", traceback.format_exc()


def serve(read_fd: int, write_fd: int, frames_fd: int) -> None:
    """Answer requests until the request pipe is closed (after writing ``ready`` once imported)."""
    import av  # noqa: F401 - import both decoders before announcing readiness
    import decord  # noqa: F401

    os.write(write_fd, b"ready")
    while (header := _read_exact(read_fd, 8)) is not None:
        body = _read_exact(read_fd, int.from_bytes(header, "little"))
        if body is None:
            return
        data = pickle.dumps(_answer(pickle.loads(body), frames_fd), protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(len(data).to_bytes(8, "little") + data)
        while view:
            view = view[os.write(write_fd, view):]


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
