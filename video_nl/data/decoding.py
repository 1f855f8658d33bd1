"""Public decoding API: ``probe``, ``decode_frames`` and ``decode_clip``, with a per-video timeout.

decord's ``get_batch`` can hang forever *holding the GIL* on damaged files (decord issue #373), so a thread
cannot time it out. With ``timeout_s > 0`` every decode therefore runs in a small helper process (one per
calling process, e.g. per DataLoader worker; started on first use, ~0.5 s; frames come back through shared
memory, one copy each side) that this module kills and restarts when a video exceeds its time; the helper
is also recycled every ``RECYCLE_EVERY`` videos, which bounds decord's memory growth. ``timeout_s <= 0``
decodes in the calling process (no protection, no copy).

When decord fails on a file (cannot open, bad batch, timeout), the file is decoded again with PyAV and a
warning is logged once per file. Paths go through iopath's ``PathManager``: local paths are used as they
are, other URIs (``http(s)://``, ... where iopath has a handler) are fetched to its local cache first.
"""
from __future__ import annotations

import logging
import os
import pickle
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import numpy as np
import torch

from .decoders import (DecodeError, DecodeResult, FixedIndices, IndexFn, VideoInfo, check_file, decode_local,
                       probe_pyav)

__all__ = ["DecodeError", "DecodeResult", "FixedIndices", "VideoInfo", "decode_clip", "decode_frames", "probe"]

log = logging.getLogger(__name__)
STARTUP_TIMEOUT_S = 300.0  # a helper's start-up (imports) on a heavily loaded machine
RECYCLE_EVERY = 500  # videos per helper process before it is replaced (bounds decoder memory growth)
_warned: set[str] = set()


def local_path(path: str) -> str:
    """A local file path for ``path`` (iopath ``PathManager``: remote URIs are downloaded to its cache)."""
    if "://" not in path or path.startswith("file://"):
        return path.removeprefix("file://")
    from iopath.common.file_io import g_pathmgr

    try:
        return g_pathmgr.get_local_path(path)
    except Exception as e:  # iopath raises handler-specific errors (HTTP, missing handler, ...)
        raise DecodeError(path, f"missing file (cannot fetch it: {type(e).__name__}: {str(e)[:120]})") from None


def probe(path: str) -> VideoInfo:
    """Frame count, fps and frame size from container metadata (no decoding; PyAV).

    Raises:
        DecodeError: missing, zero-byte, not a video, truncated container or audio-only file.
    """
    return probe_pyav(local_path(path))


def decode_clip(path: str, index_fn: IndexFn, *, backend: str = "decord", threads: int = 1,
                timeout_s: float = 30.0) -> DecodeResult:
    """Decode the frames ``index_fn(info)`` selects, where ``info`` is the decoding reader's own metadata.

    Letting the decoder call the sampler means the indices come from the frame count that actually
    decodes (container counts can be wrong) and each video is opened once. ``index_fn`` must be picklable
    (see :mod:`video_nl.data.sampling`). Returns a :class:`DecodeResult` (frames ``K×H×W×3`` uint8 numpy).

    Raises:
        DecodeError: with the path and a reason (missing, zero-byte, not a video, audio-only, truncated,
            undecodable, timeout).
    """
    file = local_path(path)
    check_file(file)
    if timeout_s <= 0:
        result = decode_local(file, index_fn, backend, threads)
    else:
        result = _decode_with_timeout(file, index_fn, backend, threads, timeout_s)
    if result.fallback and path not in _warned:
        _warned.add(path)
        log.warning("decord failed on %s (%s); decoded it with PyAV instead", path, result.fallback)
    return result


def decode_frames(path: str, indices: Sequence[int], *, backend: str = "decord", threads: int = 1,
                  timeout_s: float = 30.0) -> torch.Tensor:
    """Frames at ``indices`` (any order, repeats allowed) as uint8 ``Tensor[len(indices), H, W, 3]``.

    Only the needed frames are decoded. Raises :class:`DecodeError` like :func:`decode_clip`.
    """
    result = decode_clip(path, FixedIndices(tuple(int(i) for i in indices)), backend=backend, threads=threads,
                         timeout_s=timeout_s)
    return torch.from_numpy(result.frames)


def _decode_with_timeout(path: str, index_fn: IndexFn, backend: str, threads: int,
                         timeout_s: float) -> DecodeResult:
    try:
        return _helper().request((path, index_fn, backend, threads), timeout_s)
    except (TimeoutError, ConnectionError) as e:
        if backend != "decord":
            raise DecodeError(path, _helper_failure(e, timeout_s)) from None
        decord_failure = _helper_failure(e, timeout_s)
    try:  # decord hung or crashed: PyAV gets its own full time budget
        result = _helper().request((path, index_fn, "pyav", threads), timeout_s)
    except (TimeoutError, ConnectionError) as e:
        raise DecodeError(path, f"{_helper_failure(e, timeout_s)} with PyAV; decord: {decord_failure}") from None
    result.fallback = decord_failure
    return result


def _helper_failure(error: Exception, timeout_s: float) -> str:
    if isinstance(error, TimeoutError):
        return f"timeout (decoding took more than {timeout_s:g} s)"
    return "undecodable (the decoder process crashed on it)"


class _Helper:
    """A decode helper process (``video_nl.data._decode_server``) talking length-prefixed pickles over pipes;
    decoded frames come back through a shared-memory file (memfd) instead of the pipe."""

    def __init__(self) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        self._frames = os.memfd_create("video_nl_decoded_frames")
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "video_nl.data._decode_server", str(to_child_r), str(from_child_w),
             str(self._frames)], pass_fds=(to_child_r, from_child_w, self._frames), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        os.close(to_child_r)
        os.close(from_child_w)
        self.pid, self.served, self.lock = os.getpid(), 0, threading.Lock()
        try:  # the helper imports its decoders before saying ready: start-up never counts against a video
            ready = self._read(5, time.monotonic() + STARTUP_TIMEOUT_S)
        except OSError:
            ready = b""
        if ready != b"ready":
            self.close()
            raise RuntimeError("the decode helper process (video_nl.data._decode_server) did not start")

    def request(self, message: tuple, timeout_s: float) -> DecodeResult:
        """Send one decode request; raise TimeoutError (after killing the helper) when it takes too long and
        ConnectionError when the helper died (a decoder crash)."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self.lock:
            try:
                _write_all(self._to_child, len(data).to_bytes(8, "little") + data)
                deadline = time.monotonic() + timeout_s
                size = int.from_bytes(self._read(8, deadline), "little")
                status, payload = pickle.loads(self._read(size, deadline))
                if status == "ok":
                    payload = self._with_frames(*payload)
            except TimeoutError:
                raise
            except OSError as e:  # a dead helper: BrokenPipeError, ConnectionError
                self.close()
                raise ConnectionError(str(e)) from None
            self.served += 1
        if status == "ok":
            return payload
        if status == "error":
            raise DecodeError(message[0], payload)
        raise RuntimeError(f"decode helper failed on {message[0]}:\n{payload}")

    def _with_frames(self, result: DecodeResult, shape: tuple[int, ...]) -> DecodeResult:
        """``result`` with its uint8 frames of ``shape`` read from the shared-memory file (one copy)."""
        frames = np.empty(shape, dtype=np.uint8)
        view, offset = memoryview(frames).cast("B"), 0
        while offset < len(view):
            read = os.preadv(self._frames, [view[offset:]], offset)
            if not read:
                raise ConnectionError("decode helper wrote fewer frame bytes than announced")
            offset += read
        result.frames = frames
        return result

    def _read(self, size: int, deadline: float) -> bytes:
        chunks, left = [], size
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([self._from_child], [], [], wait)[0]:
                self.close()
                raise TimeoutError
            chunk = os.read(self._from_child, min(left, 1 << 22))
            if not chunk:
                raise ConnectionError("decode helper closed its pipe")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def alive(self) -> bool:
        return self.proc.poll() is None and self.served < RECYCLE_EVERY

    def close(self) -> None:
        """Kill the helper process and close the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for fd in (self._to_child, self._from_child, self._frames):
            try:
                os.close(fd)
            except OSError:
                pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


_lock = threading.Lock()
_current: _Helper | None = None


def _helper() -> _Helper:
    """This process's helper (a forked DataLoader worker starts its own; the parent's is left alone)."""
    global _current
    with _lock:
        if _current is not None and _current.pid == os.getpid() and not _current.alive():
            _current.close()
            _current = None
        if _current is None or _current.pid != os.getpid():
            _current = _Helper()
        return _current
