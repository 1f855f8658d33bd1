"""Atomic writes leave files with the usual umask-based permissions (not mkstemp's owner-only 0600)."""
import os

from video_nl.utils.io import atomic_json_dump


def test_atomic_write_uses_the_umask_mode(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    atomic_json_dump({"a": 1}, tmp_path / "x.json")
    assert os.stat(tmp_path / "x.json").st_mode & 0o777 == 0o666 & ~mask
