"""Unsafe files: checkpoints and Caffe2 pkls carrying a pickle payload that would run code are refused
*without running it* (the payload would create a marker file; the marker must not exist afterwards), with a
message saying why — through the library, `video-nl test --checkpoint`, `video-nl convert --from caffe2`,
TRAIN.CHECKPOINT_FILE_PATH and auto-resume.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from conftest import assert_user_error, checkpoints, deep_update, require, run_cli, write_cfg

from video_nl.utils.io import UnsafeFileError, safe_torch_load


class Payload:
    """Unpickling this runs ``exec`` which writes ``marker`` (what an attacker's file would do)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def evil_checkpoint(path, marker, *, where: str = "meta") -> str:
    """A video_nl-shaped checkpoint with the payload hidden in ``meta`` (or as the whole object)."""
    from video_nl.config import get_default_config

    obj = {"model_state": {"head.fc.weight": torch.zeros(2, 4)}, "cfg": get_default_config().to_dict(),
           "meta": {"source": "video_nl", "x": Payload(marker)}, "epoch": 1, "iteration": 1}
    torch.save(Payload(marker) if where == "top" else obj, path)
    return str(path)


def evil_caffe2_pkl(path, marker) -> str:
    """A Caffe2-style ``{"blobs": {...}}`` pickle (protocol 2, as the released pkls) with a payload blob."""
    blobs = {"conv1_w": np.zeros((4, 3, 1, 7, 7), np.float32), "pred_b": np.zeros(2, np.float32),
             "evil": Payload(marker)}
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)
    return str(path)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield str(path)
    assert not path.exists(), "the pickle payload RAN: the marker file was created"


def test_payload_really_runs_when_unpickled_unsafely(tmp_path):
    """Guard against a test that cannot fail: the payload does create the marker with a plain load."""
    m = str(tmp_path / "proof")
    torch.load(evil_checkpoint(tmp_path / "e.pyth", m), weights_only=False)
    assert os.path.exists(m)
    m2 = str(tmp_path / "proof2")
    with open(evil_caffe2_pkl(tmp_path / "e.pkl", m2), "rb") as f:
        pickle.load(f)
    assert os.path.exists(m2)


@pytest.mark.parametrize("where", ["meta", "top"])
def test_safe_torch_load_refuses_payload(tmp_path, marker, where):
    path = evil_checkpoint(tmp_path / "evil.pyth", marker, where=where)
    with pytest.raises(UnsafeFileError, match="run code"):
        safe_torch_load(path)


def test_caffe2_reader_refuses_payload(tmp_path, marker):
    require("video_nl.models.weights.caffe2")
    from video_nl.models.weights.caffe2 import read_blobs

    with pytest.raises(UnsafeFileError, match="Refused"):
        read_blobs(evil_caffe2_pkl(tmp_path / "evil.pkl", marker))


def test_convert_caffe2_cli_refuses_payload(tmp_path, marker, tiny_cfg):
    require("video_nl.models.weights.convert")
    dst = tmp_path / "out.pyth"
    res = run_cli(["convert", "--cfg", tiny_cfg(), "--from", "caffe2", evil_caffe2_pkl(tmp_path / "evil.pkl", marker),
                   dst], timeout=180)
    assert_user_error(res, "evil.pkl", "refused", command="convert")
    assert not dst.exists(), "a converted file was written from a refused source"


def test_test_cli_refuses_payload_checkpoint(tmp_path, marker, good_data):
    require("video_nl.engine.evaluate")
    cfg = write_cfg(tmp_path / "cfg.yaml", deep_update(good_data["cfg"], {"OUTPUT_DIR": str(tmp_path / "run")}))
    res = run_cli(["test", "--cfg", cfg, "--checkpoint", evil_checkpoint(tmp_path / "evil.pyth", marker)],
                  timeout=180)
    assert_user_error(res, "evil.pyth", "run code", command="test")


def test_train_checkpoint_file_path_refuses_payload(tmp_path, marker, good_data):
    require("video_nl.engine.train")
    evil = evil_checkpoint(tmp_path / "evil.pyth", marker)
    cfg = write_cfg(tmp_path / "cfg.yaml", deep_update(good_data["cfg"], {
        "OUTPUT_DIR": str(tmp_path / "run"), "TRAIN": {"CHECKPOINT_FILE_PATH": evil}}))
    res = run_cli(["train", "--cfg", cfg], timeout=240)
    assert_user_error(res, "evil.pyth", "run code", command="train")
    assert not checkpoints(tmp_path / "run"), "training went on from a refused initial checkpoint"


def test_auto_resume_never_runs_a_payload_checkpoint(tmp_path, marker, good_data):
    """A payload file planted as the newest checkpoint: auto-resume must not unpickle it unsafely; it is
    skipped with a warning naming it (training starts afresh) or refused with an error naming it."""
    require("video_nl.engine.train")
    run = tmp_path / "run"
    os.makedirs(run / "checkpoints")
    evil_checkpoint(run / "checkpoints" / "checkpoint_epoch_00009.pyth", marker)
    cfg = write_cfg(tmp_path / "cfg.yaml", deep_update(good_data["cfg"], {
        "OUTPUT_DIR": str(run), "SOLVER": {"MAX_EPOCH": 1}}))
    res = run_cli(["train", "--cfg", cfg], timeout=300)
    assert "Traceback" not in res.err, res
    assert "checkpoint_epoch_00009.pyth" in res.err + res.out, f"the refused checkpoint is not named: {res!r}"
