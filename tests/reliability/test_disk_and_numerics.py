"""Disk full, unwritable OUTPUT_DIR and non-finite losses, provoked for real.

* OUTPUT_DIR under a regular file (ENOTDIR) and on a read-only mount (EROFS; ``chmod`` when not root, since root
  ignores permission bits): a clear error before training starts.
* A full disk at a checkpoint write, two real ways: ``RLIMIT_FSIZE`` in the child (SIGXFSZ ignored → EFBIG) and
  a tiny tmpfs (ENOSPC, root only): a clear error naming the write, and the previous checkpoint intact.
* SOLVER.BASE_LR 1e30 makes the weights blow up and the loss NaN/inf: training stops with a message naming the
  iteration and the last good checkpoint (unchanged), or skips the steps with TRAIN.SKIP_NONFINITE.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import signal
import subprocess

import pytest
from conftest import (assert_user_error, checkpoints, deep_update, make_dataset, read_jsonl, require, run_cli,
                      temp_files, write_cfg)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    require("video_nl.engine.train")
    return make_dataset(tmp_path_factory.mktemp("disk_data"), num_good=4)


def _cfg(data, folder, out, extra=None) -> str:
    return write_cfg(os.path.join(folder, "cfg.yaml"),
                     deep_update(data["cfg"], {"OUTPUT_DIR": str(out), "TRAIN": {"KEEP_CHECKPOINTS": 0},
                                               **(extra or {})}))


@pytest.fixture(scope="module")
def one_epoch(data, tmp_path_factory):
    """A run folder holding the checkpoint of a finished first epoch (copied by each test)."""
    folder = tmp_path_factory.mktemp("one_epoch")
    res = run_cli(["train", "--cfg", _cfg(data, folder, folder / "run", {"SOLVER": {"MAX_EPOCH": 1}})], timeout=300)
    assert res.code == 0, res
    return folder / "run"


def _digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _assert_previous_intact(out, before: dict) -> None:
    from video_nl.utils.io import safe_torch_load

    for path, digest in before.items():
        assert os.path.exists(path) and _digest(path) == digest, f"previous checkpoint {path} was changed"
        safe_torch_load(path)
    assert not temp_files(out), f"temporary files left: {temp_files(out)}"


@contextlib.contextmanager
def tmpfs(path, size: str, *options: str):
    """Mount a tmpfs at ``path`` (root only; skips with the reason otherwise), unmounted afterwards."""
    os.makedirs(path, exist_ok=True)
    opts = ",".join((f"size={size}",) + options)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


# ------------------------------------------------------------------ unwritable OUTPUT_DIR
def test_output_dir_under_a_regular_file(data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "run"
    res = run_cli(["train", "--cfg", _cfg(data, tmp_path, out)], timeout=300)
    assert_user_error(res, str(out), command="train")
    assert "epoch 1" not in res.out and "train_iter" not in res.out, f"training started: {res!r}"


def test_read_only_output_dir(data, tmp_path):
    ro = tmp_path / "ro"
    if os.geteuid() == 0:  # root ignores permission bits: use a read-only mount instead
        ctx = tmpfs(ro, "1m", "ro")
    else:
        os.makedirs(ro)
        os.chmod(ro, 0o555)
        ctx = contextlib.nullcontext(str(ro))
    with ctx:
        out = os.path.join(ro, "run")
        res = run_cli(["train", "--cfg", _cfg(data, tmp_path, out)], timeout=300)
    assert_user_error(res, out, command="train")
    assert "train_iter" not in res.out, f"training started: {res!r}"


# ------------------------------------------------------------------ disk full at a checkpoint write
def _limit_file_size(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_file_size_limit_at_checkpoint_write_keeps_previous_checkpoint(data, one_epoch, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(one_epoch, out)
    before = {p: _digest(p) for p in checkpoints(out)}
    limit = os.path.getsize(checkpoints(out)[-1]) // 2  # logs and config stay far below; a checkpoint cannot
    res = run_cli(["train", "--cfg", _cfg(data, tmp_path, out, {"SOLVER": {"MAX_EPOCH": 2}})], timeout=300,
                  preexec_fn=_limit_file_size(limit))
    assert "resumed from" in res.out, f"the run did not get to training: {res!r}"
    _assert_previous_intact(out, before)
    assert_user_error(res, "checkpoint", command="train")


def test_full_tmpfs_at_checkpoint_write_keeps_previous_checkpoint(data, one_epoch, tmp_path):
    mnt = tmp_path / "mnt"
    used = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(one_epoch) for f in fs)
    room = used + os.path.getsize(checkpoints(one_epoch)[-1]) // 2 + 64 * 1024
    with tmpfs(mnt, str(room)):
        out = os.path.join(mnt, "run")
        shutil.copytree(one_epoch, out)
        before = {p: _digest(p) for p in checkpoints(out)}
        res = run_cli(["train", "--cfg", _cfg(data, tmp_path, out, {"SOLVER": {"MAX_EPOCH": 2}})], timeout=300)
        _assert_previous_intact(out, before)
        assert_user_error(res, "checkpoint", "space", command="train")


# ------------------------------------------------------------------ non-finite loss
def test_nan_loss_stops_naming_the_iteration_and_keeps_the_last_good_checkpoint(data, one_epoch, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(one_epoch, out)
    before = {p: _digest(p) for p in checkpoints(out)}
    res = run_cli(["train", "--cfg", _cfg(data, tmp_path, out, {"SOLVER": {"MAX_EPOCH": 2, "BASE_LR": 1e30}})],
                  timeout=300)
    assert_user_error(res, "NaN", "iteration", os.path.basename(checkpoints(out)[-1]), command="train")
    assert "epoch 2" in res.err, f"the message does not name where it happened: {res!r}"
    assert checkpoints(out) == sorted(before), "a checkpoint was written after the loss became non-finite"
    _assert_previous_intact(out, before)


def test_skip_nonfinite_skips_the_steps_and_finishes(data, tmp_path):
    out = tmp_path / "run"
    res = run_cli(["train", "--cfg", _cfg(data, tmp_path, out, {
        "SOLVER": {"MAX_EPOCH": 1, "BASE_LR": 1e30}, "TRAIN": {"SKIP_NONFINITE": True, "KEEP_CHECKPOINTS": 0}})],
        timeout=300)
    assert res.code == 0, res
    epochs = [r for r in read_jsonl(out / "log.jsonl") if r.get("_type") == "train_epoch"]
    assert epochs and epochs[-1]["skipped_steps"] > 0, epochs
    assert "skipped the step" in res.out
