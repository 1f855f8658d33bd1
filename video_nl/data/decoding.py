"""Public decoding API: ``probe``, ``decode_frames``, ``decode_clip`` and ``index_video``, with a per-video timeout.

Every call goes through the video's frame index (:mod:`video_nl.data.frame_index`, cached under
``index_dir``, default the user's cache folder): frame ``i`` is the ``i``-th frame of a sequential decode,
``probe`` gives the true frame count, and each file is routed to decord where decord is exact on it, else to
the exact PyAV path (:mod:`video_nl.data.decoders`).

decord's ``get_batch`` can hang forever *holding the GIL* on damaged files (decord issue #373), so a thread
cannot time it out. With ``timeout_s > 0`` every decode (and index build) therefore runs in a small helper
process (one per calling thread, e.g. per DataLoader worker; started on first use, ~0.5 s; frames come back
through shared memory, one copy each side) that this module kills and restarts when a video exceeds its
time; the helper is also recycled every ``RECYCLE_EVERY`` videos, which bounds decord's memory growth.
``timeout_s <= 0`` decodes in the calling process (no protection, no copy).

When decord fails on a file it was found exact on (cannot open, bad batch, timeout), the file is decoded
again with PyAV and a warning is logged once per file. Paths go through iopath's ``PathManager``: local paths
are used as they are, other URIs (``http(s)://``, ... where iopath has a handler) are fetched to its local
cache first.
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

from .decoders import DecodeError, DecodeResult, FixedIndices, IndexFn, VideoInfo, check_file, decode_video
from .frame_index import FrameIndex, load_index

__all__ = ["DecodeError", "DecodeResult", "FixedIndices", "VideoInfo", "decode_clip", "decode_frames", "index_video",
           "probe"]

log = logging.getLogger(__name__)
STARTUP_TIMEOUT_S = 300.0  # a helper's start-up (imports) on a heavily loaded machine
RECYCLE_EVERY = 500  # requests per helper process before it is replaced (bounds decoder memory growth)
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


def probe(path: str, *, index_dir: str | None = None) -> VideoInfo:
    """Frame count (of a sequential decode), fps and frame size, from the video's frame index.

    The index is read from ``index_dir`` or built (a packet scan: no decoding, except for files whose
    timestamps cannot be trusted) in this process.

    Raises:
        DecodeError: missing, zero-byte, not a video, truncated container, audio-only or undecodable file.
    """
    return load_index(local_path(path), index_dir).info


def index_video(path: str, *, index_dir: str | None = None, timeout_s: float = 30.0,
                rebuild: bool = False) -> FrameIndex:
    """The :class:`~video_nl.data.frame_index.FrameIndex` of ``path`` (cached in ``index_dir``), built in the
    helper process when ``timeout_s > 0`` (a file that hangs the decoders becomes a ``timeout`` DecodeError).

    Raises:
        DecodeError: the file cannot be indexed (with the reason).
    """
    file = local_path(path)
    check_file(file)
    if timeout_s <= 0:
        return load_index(file, index_dir, rebuild=rebuild)
    try:
        return _helper().request(("index", file, index_dir, rebuild), timeout_s)
    except (TimeoutError, ConnectionError) as e:
        raise DecodeError(path, _helper_failure(e, timeout_s)) from None


def decode_clip(path: str, index_fn: IndexFn, *, backend: str = "decord", threads: int = 1,
                timeout_s: float = 30.0, index_dir: str | None = None) -> DecodeResult:
    """Decode the frames ``index_fn(info)`` selects, where ``info`` comes from the video's frame index (its
    ``num_frames`` is the true count).

    Letting the decoder call the sampler means each video is opened once (the index is read from
    ``index_dir``, or built there on first use). ``index_fn`` must be picklable (see
    :mod:`video_nl.data.sampling`). Returns a :class:`DecodeResult` (frames ``K×H×W×3`` uint8 numpy).

    Raises:
        DecodeError: with the path and a reason (missing, zero-byte, not a video, audio-only, truncated,
            undecodable, timeout, frame indices out of range with the true frame count).
    """
    file = local_path(path)
    check_file(file)
    if timeout_s <= 0:
        result = decode_video(file, index_fn, backend, threads, index_dir)
    else:
        result = _decode_with_timeout(file, index_fn, backend, threads, timeout_s, index_dir)
    if result.fallback and path not in _warned:
        _warned.add(path)
        log.warning("decord failed on %s (%s); decoded it with PyAV instead", path, result.fallback)
    return result


def decode_frames(path: str, indices: Sequence[int], *, backend: str = "decord", threads: int = 1,
                  timeout_s: float = 30.0, index_dir: str | None = None) -> torch.Tensor:
    """Frames at ``indices`` (any order, repeats allowed) as uint8 ``Tensor[len(indices), H, W, 3]``.

    Frame ``i`` is the ``i``-th frame of a sequential decode; only the needed frames are decoded. Raises
    :class:`DecodeError` like :func:`decode_clip` (also for indices outside ``[0, num_frames)``).
    """
    result = decode_clip(path, FixedIndices(tuple(int(i) for i in indices)), backend=backend, threads=threads,
                         timeout_s=timeout_s, index_dir=index_dir)
    return torch.from_numpy(result.frames)


def _decode_with_timeout(path: str, index_fn: IndexFn, backend: str, threads: int, timeout_s: float,
                         index_dir: str | None) -> DecodeResult:
    try:
        return _helper().request(("decode", path, index_fn, backend, threads, index_dir), timeout_s)
    except (TimeoutError, ConnectionError) as e:
        if backend != "decord":
            raise DecodeError(path, _helper_failure(e, timeout_s)) from None
        decord_failure = _helper_failure(e, timeout_s)
    try:  # decord hung or crashed: PyAV gets its own full time budget
        result = _helper().request(("decode", path, index_fn, "pyav", threads, index_dir), timeout_s)
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
        self._fds_open = True
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

    def request(self, message: tuple, timeout_s: float):
        """Send one request (see :mod:`video_nl.data._decode_server`) and return its answer; raise TimeoutError
        (after killing the helper) when it takes too long and ConnectionError when the helper died (a decoder
        crash)."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self.lock:
            try:
                _write_all(self._to_child, len(data).to_bytes(8, "little") + data)
                deadline = time.monotonic() + timeout_s
                size = int.from_bytes(self._read(8, deadline), "little")
                status, payload = pickle.loads(self._read(size, deadline))
                if status == "frames":
                    payload = self._with_frames(*payload)
            except TimeoutError:
                raise
            except OSError as e:  # a dead helper: BrokenPipeError, ConnectionError
                self.close()
                raise ConnectionError(str(e)) from None
            self.served += 1
        if status in ("ok", "frames"):
            return payload
        if status == "error":
            raise DecodeError(message[1], payload)
        raise RuntimeError(f"decode helper failed on {message[1]}:\n{payload}")

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
        """Kill the helper process and close the pipes. Idempotent: a helper closed after a failed request is
        closed again by :func:`_helper`, and by then its descriptor numbers may belong to someone else (a
        DataLoader queue's shared-memory fd, a socket), which a second ``os.close`` would close under them."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if not self._fds_open:
            return
        self._fds_open = False
        for fd in (self._to_child, self._from_child, self._frames):
            try:
                os.close(fd)
            except OSError:
                pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


_local = threading.local()
_lock = threading.Lock()
_started: list[tuple[threading.Thread, _Helper]] = []  # helpers this process started, with their threads


def _helper() -> _Helper:
    """This thread's helper (a forked DataLoader worker starts its own; the parent's is left alone)."""
    current = current_helper()
    if current is not None and not current.alive():
        current.close()
        with _lock:
            _started[:] = [(t, h) for t, h in _started if h is not current]
        current = None
    if current is None:
        close_finished_helpers()  # threads that ended since (e.g. a finished pool) do not keep their helpers
        current = _local.helper = _Helper()
        with _lock:
            _started.append((threading.current_thread(), current))
    return current


def current_helper() -> _Helper | None:
    """The helper process this thread uses now, if it started one."""
    helper = getattr(_local, "helper", None)
    return helper if helper is not None and helper.pid == os.getpid() else None


def close_finished_helpers() -> None:
    """Close the helpers of threads that have ended (e.g. after a thread pool of :func:`index_video` calls)."""
    with _lock:
        mine = [(t, h) for t, h in _started if h.pid == os.getpid()]  # a forked worker drops its parent's
        ended = [(t, h) for t, h in mine if not t.is_alive()]
        _started[:] = [(t, h) for t, h in mine if t.is_alive()]
    for _, helper in ended:
        helper.close()
