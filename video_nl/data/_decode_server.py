"""Decode helper process (started by :mod:`video_nl.data.decoding`): decodes requests read from a pipe.

Protocol: each message is an 8-byte little-endian length and a pickle. Request ``(path, index_fn, backend,
threads)``; reply ``("ok", (DecodeResult without frames, frames shape))`` with the uint8 frames written at the
start of the shared-memory file (a memfd the caller passes), so megabytes of pixels are copied once each way
instead of being pickled through the pipe in 64 KiB pieces; ``("error", reason)`` for a :class:`DecodeError`
or ``("bug", traceback)`` for anything else. The process exits when its request pipe closes.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import sys
import traceback

import numpy as np

from .decoders import DecodeError, DecodeResult, decode_local


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


def serve(read_fd: int, write_fd: int, frames_fd: int) -> None:
    """Answer decode requests until the request pipe is closed (after writing ``ready`` once imported)."""
    import av  # noqa: F401 - import both decoders before announcing readiness
    import decord  # noqa: F401

    os.write(write_fd, b"ready")
    while (header := _read_exact(read_fd, 8)) is not None:
        body = _read_exact(read_fd, int.from_bytes(header, "little"))
        if body is None:
            return
        path, index_fn, backend, threads = pickle.loads(body)
        try:
            reply = ("ok", _share_frames(decode_local(path, index_fn, backend, threads), frames_fd))
        except DecodeError as e:
            reply = ("error", e.reason)
        except Exception:  # reported to the caller, which raises it with this traceback
            reply = ("bug", traceback.format_exc())
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(len(data).to_bytes(8, "little") + data)
        while view:
            view = view[os.write(write_fd, view):]


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
