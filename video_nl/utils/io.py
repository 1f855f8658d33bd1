"""Atomic writes and safe reads of checkpoint files.

Every file video_nl writes that a crash could leave half-written (checkpoints, converted weights,
re-encoded videos, JSON summaries) goes through :func:`atomic_write`: a temporary file in the same
folder, fsync, then ``os.replace`` — readers see the old file or the new one, never a torn one.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:  # torch is imported where it is used: the atomic writers also serve torch-free processes
    import torch


class UnsafeFileError(UserError):
    """A file would need to run code (an arbitrary pickle payload) to be read; it was refused."""


def _umask_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_DEFAULT_FILE_MODE = _umask_file_mode()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, durable: bool = True) -> Iterator[Any]:
    """Open a temporary file next to ``path``; on success fsync and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched. ``durable=False`` skips
    the fsyncs (still atomic: for caches, where a lost write only means recomputing it).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), _DEFAULT_FILE_MODE)  # mkstemp makes 0600; give the usual umask-based mode
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename itself durable
            if durable:
                dfd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        cause = _os_error(e)
        if cause is not None:  # disk full, file too large, read-only, ...: the user's environment, not a bug
            raise write_error(path, cause, note="the previous file at that path, if any, is left untouched") from e
        raise


def write_error(path: str, error: OSError, *, note: str = "") -> UserError:
    """The :class:`UserError` for a write of ``path`` that failed with ``error`` (disk full, read-only, ...)."""
    detail = f"; {note}" if note else ""
    return UserError(f"Could not write {path}: {error.strerror or error} (errno {error.errno}){detail}. "
                     f"Free space or fix the folder.")


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` to ``path`` (a log file) and flush it; an OS error becomes a :class:`UserError`."""
    path = os.fspath(path)
    try:
        with open(path, "a") as f:
            f.write(text)
            f.flush()
    except OSError as e:
        raise write_error(path, e) from e


def ensure_writable_dir(path: str | os.PathLike, *, name: str) -> None:
    """Create the folder ``path`` if needed and check that a file can be written in it.

    Raises:
        UserError: naming ``name`` (the config key, e.g. ``OUTPUT_DIR``), ``path`` and the reason.
    """
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UserError(f"{name} {path} cannot be used as an output folder: {e.strerror or e} (errno {e.errno}). "
                        f"Set {name} to a folder you can write to (not under a regular file, not on a "
                        f"read-only mount).") from e


def _os_error(error: BaseException | None) -> OSError | None:
    """The OSError in ``error``'s chain (torch.save wraps a failed write in a RuntimeError), if any."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, OSError):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def atomic_json_dump(obj: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """``json.dump`` (indent 2 by default) through :func:`atomic_write`."""
    kwargs.setdefault("indent", 2)
    with atomic_write(path, "w") as f:
        json.dump(obj, f, **kwargs)
        f.write("\n")


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors, dicts, lists and numbers only.

    Raises:
        UnsafeFileError: the file holds objects that need code to rebuild (a pickle payload).
        UserError: the file is missing or not a torch checkpoint.
    """
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"Checkpoint {path} does not exist.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError (and others) for unsafe or corrupt files
        text = str(e)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise UnsafeFileError(f"Refused to load {path}: it contains Python objects that would run code when "
                                  f"unpickled, and checkpoints are read with torch.load(weights_only=True). "
                                  f"Detail: {text.splitlines()[0][:300]}") from None
        raise UserError(f"Cannot read checkpoint {path} (truncated or not a torch file): "
                        f"{type(e).__name__}: {text.splitlines()[0][:300] if text else ''}") from None
