"""Bad videos: a train and a test list mixing good videos with every kind of damaged file (made for real by
``badvideos.py``). Decoding fails with the path and a reason (never a hang: a FIFO that blocks forever is cut by
``DATA.DECODE_TIMEOUT_S``); datasets substitute and report; training completes every epoch reporting each bad
file once per epoch; testing counts them as failed in the denominator; memory stays bounded over many epochs.
"""
from __future__ import annotations

import json
import os
import re
import struct
import threading
import time

import pytest
import torch
from badvideos import (ALL_KINDS, BAD_KINDS, ODD_KINDS, _boxes, claimed_frames, count_decodable_frames,
                       make_fifo, release_fifo)
from conftest import (TINY, assert_user_error, deep_update, make_dataset, read_jsonl, require, run_cli, vmrss_kib,
                      write_cfg)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """One file of every kind (plus 20 good videos: substitutes are drawn at random, keep bad ones < 1/3) with train/val/test lists of all of them."""
    return make_dataset(tmp_path_factory.mktemp("zoo"), num_good=20, bad_kinds=ALL_KINDS)


# ------------------------------------------------------------------ the factory makes what it says
def test_factory_makes_each_kind_for_real(zoo):
    bad = {k: p for k, (p, _) in zoo["bad"].items()}
    good = zoo["good"][0][0]
    size = os.path.getsize(good)
    assert not os.path.exists(bad["missing"])
    assert os.path.getsize(bad["zero_byte"]) == 0
    for pct in (10, 50, 90):  # the good videos share the truncated ones' encoder settings: sizes are close
        assert 0 < os.path.getsize(bad[f"truncated_{pct}"]) < size
        assert count_decodable_frames(bad[f"truncated_{pct}"]) == 0
    with open(bad["header_only"], "rb") as f:
        kinds = [b[0] for b in _boxes(f.read())]
    assert "moov" in kinds and "mdat" not in kinds and claimed_frames(bad["header_only"]) == 16
    assert count_decodable_frames(bad["random_bytes"]) == 0
    import av
    with av.open(bad["audio_only"]) as c:
        assert len(c.streams.audio) == 1 and len(c.streams.video) == 0
    with open(bad["png_as_mp4"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.isdir(bad["directory"])
    assert bad["mp4_as_avi"].endswith(".avi") and count_decodable_frames(bad["mp4_as_avi"]) == 16
    assert count_decodable_frames(bad["one_frame"]) == 1
    with av.open(bad["vfr"]) as c:
        pts = [f.pts for f in c.decode(video=0)]
    gaps = {b - a for a, b in zip(pts, pts[1:])}
    assert len(pts) == 16 and len(gaps) > 1, f"frame gaps are regular: {pts}"
    assert 0 < count_decodable_frames(bad["overclaim"]) < claimed_frames(bad["overclaim"]) == 48
    assert struct.unpack(">I", open(good, "rb").read(8)[4:8])[0] != 0


# ------------------------------------------------------------------ decoding one file
@pytest.mark.parametrize("timeout_s", [20.0, 0.0], ids=["helper", "inprocess"])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_decode_each_kind(zoo, kind, timeout_s):
    """The real train sampler (4 frames, stride 2) through decode_clip, with and without the timeout helper."""
    require("video_nl.data.decoding")
    from video_nl.data.decoding import DecodeError, decode_clip
    from video_nl.data.sampling import TrainSampler

    path = zoo["bad"][kind][0]
    t0 = time.time()
    try:
        frames = torch.from_numpy(decode_clip(path, TrainSampler(num_frames=4, rate=2, target_fps=0.0, seed=0),
                                              timeout_s=timeout_s).frames)
    except DecodeError as e:
        assert path in str(e) and len(str(e)) > len(path) + 5, f"no reason given: {e}"
        assert kind in BAD_KINDS + ("png_as_mp4", "overclaim"), f"{kind} is decodable but failed: {e}"
    else:
        assert kind in ODD_KINDS, f"{kind} decoded to {tuple(frames.shape)} instead of failing"
        assert frames.dtype == torch.uint8 and tuple(frames.shape) == (4, 32, 32, 3)
    assert time.time() - t0 < 60


def test_fifo_that_blocks_forever_is_cut_by_the_timeout(tmp_path):
    """Opening a named pipe blocks until a writer appears: the per-video timeout must end it."""
    require("video_nl.data.decoding")
    from video_nl.data.decoding import DecodeError, decode_frames

    fifo = make_fifo(tmp_path)
    stop = threading.Event()

    def unblock_later():  # safety net: never leave a reader blocked after the test
        if not stop.wait(120):
            release_fifo(fifo)

    threading.Thread(target=unblock_later, daemon=True).start()
    t0 = time.time()
    try:
        with pytest.raises(DecodeError, match="timeout"):
            decode_frames(fifo, [0, 1], timeout_s=2.0)
    finally:
        stop.set()
        release_fifo(fifo)
    assert time.time() - t0 < 60, f"timeout of 2 s took {time.time() - t0:.0f} s"


# ------------------------------------------------------------------ datasets
def _cfg(zoo, extra=None):
    from video_nl.config import load_config

    path = write_cfg(os.path.join(zoo["dir"], "ds.yaml"), deep_update(zoo["cfg"], extra or {}))
    return load_config(path)


def test_train_dataset_substitutes_and_reports_every_bad_file(zoo):
    require("video_nl.data.datasets")
    from video_nl.data.datasets import VideoClipDataset

    ds = VideoClipDataset(_cfg(zoo), "train")
    bad = {zoo["bad"][k][0] for k in BAD_KINDS}
    odd = {zoo["bad"][k][0] for k in ODD_KINDS}
    for epoch in range(2):
        reported = {}
        for i in range(len(ds)):
            item = ds[(epoch, i)]
            assert tuple(item["video"].shape) == (3, 4, 32, 32) and torch.isfinite(item["video"]).all()
            for path, reason in item["failures"]:
                assert reason, f"no reason for {path}"
                reported.setdefault(path, reason)
            assert ds.entries[item["index"]].path not in bad, "a bad video was served as a clip"
        assert bad <= set(reported), f"epoch {epoch}: never reported: {sorted(bad - set(reported))}"
        assert set(reported) <= bad | odd, f"good videos reported as failed: {sorted(set(reported) - bad - odd)}"
        for kind in ("missing", "zero_byte", "directory"):
            assert reported[zoo["bad"][kind][0]], kind


def test_test_dataset_marks_bad_files_failed(zoo):
    require("video_nl.data.datasets")
    from video_nl.data.datasets import MultiViewDataset

    ds = MultiViewDataset(_cfg(zoo), "test")
    bad = {zoo["bad"][k][0] for k in BAD_KINDS}
    for i in range(len(ds)):
        item = ds[i]
        if item["path"] in bad:
            assert not item["ok"] and item["failure"], f"{item['path']} not marked failed"
        elif item["ok"]:
            assert tuple(item["views"].shape) == (2, 3, 4, 32, 32)


def test_memory_stays_bounded_over_many_epochs(zoo):
    """A decode loop over the whole mixed list, 30 epochs, in-process (DECODE_TIMEOUT_S 0: no helper process
    that could be recycled): RSS (VmRSS of /proc/self/status) must not keep growing after a warm-up."""
    require("video_nl.data.decoding")
    from video_nl.data.decoding import DecodeError, decode_clip
    from video_nl.data.sampling import TrainSampler

    paths = [p for p, _ in zoo["good"][:4]] + [p for p, _ in zoo["bad"].values()]
    samples, failed = [], 0
    for epoch in range(30):
        for i, path in enumerate(paths):
            try:
                decode_clip(path, TrainSampler(num_frames=4, rate=2, target_fps=0.0, seed=epoch * 100 + i),
                            timeout_s=0.0)
            except DecodeError:
                failed += 1
        samples.append(vmrss_kib())
    assert failed >= 30 * len(BAD_KINDS), failed
    warm = samples[4]
    growth = max(samples[5:]) - warm
    assert growth < 32 * 1024, f"RSS grew by {growth / 1024:.1f} MiB over 25 epochs after warm-up: {samples}"


# ------------------------------------------------------------------ training and testing runs
def _report_counts(text: str, path: str) -> int:
    return len(re.findall(re.escape(f"failed to load {path}:"), text))


@pytest.mark.slow
def test_training_on_a_bad_list_completes_and_reports_each_file_once_per_epoch(zoo, tmp_path):
    require("video_nl.engine.train")
    out = tmp_path / "run"
    epochs = 2
    cfg = write_cfg(tmp_path / "cfg.yaml", deep_update(zoo["cfg"], {
        # 34 videos, batch 2: no drop_last remainder, so every file is visited every epoch
        "OUTPUT_DIR": str(out), "SOLVER": {"MAX_EPOCH": epochs}, "TRAIN": {"BATCH_SIZE": 2, "EVAL_PERIOD": 1},
        "DATA_LOADER": {"NUM_WORKERS": 1}, "TEST": {"ENABLE": True}}))
    res = run_cli(["train", "--cfg", cfg], timeout=480)
    assert res.code == 0, res
    text = res.out + res.err
    for kind in BAD_KINDS:
        path = zoo["bad"][kind][0]
        assert _report_counts(text, path) == epochs, \
            f"{kind}: reported {_report_counts(text, path)} times in {epochs} epochs (promised once per epoch): {res!r}"
    rows = read_jsonl(out / "log.jsonl")
    ep = [r for r in rows if r.get("_type") == "train_epoch"]
    assert len(ep) == epochs, f"train_epoch lines: {ep}"
    summary = json.loads((out / "test" / "summary.json").read_text())
    n_list = len(zoo["good"]) + len(zoo["bad"])
    assert summary["num_videos"] == n_list, summary
    failed_tests = set(re.findall(r"failed to load test video (\S+): ", res.out))
    assert {zoo["bad"][k][0] for k in BAD_KINDS} <= failed_tests
    assert summary["num_failed"] == len(failed_tests), (summary, failed_tests)
    # failed videos count as wrong: top-1 can be at most the share of videos that loaded
    assert summary["top1"] <= 100.0 * (n_list - summary["num_failed"]) / n_list + 1e-6
    # the epoch summary's count matches the files reported in that epoch
    reported, per_epoch = set(), []
    for line in res.out.splitlines():
        m = re.search(r"failed to load (\S+): ", line)
        if m:
            reported.add(m.group(1))
        elif '"_type": "train_epoch"' in line:
            per_epoch.append(reported)
            reported = set()
    for r, files in zip(ep, per_epoch):
        assert r["num_failed_videos"] == len(files), (
            f"epoch {r['epoch']}: train_epoch num_failed_videos is {r['num_failed_videos']} but {len(files)} "
            f"distinct files were reported in that epoch (a bad file drawn again as a substitute counts twice)")

def test_too_many_failures_stop_with_a_clear_error(tmp_path):
    require("video_nl.engine.train")
    data = make_dataset(tmp_path / "data", num_good=2, bad_kinds=("missing", "zero_byte", "random_bytes"))
    cfg = write_cfg(tmp_path / "cfg.yaml", deep_update(data["cfg"], {
        "OUTPUT_DIR": str(tmp_path / "run"), "DATA": {"MAX_FAILURE_RATIO": 0.5}}))
    res = run_cli(["train", "--cfg", cfg], timeout=300)
    assert_user_error(res, "DATA.MAX_FAILURE_RATIO", command="train")


def test_unused_tiny_keys_are_real():
    """The config keys this suite relies on exist in the schema (guards against silent renames)."""
    from video_nl.config import all_keys

    names = {n for n, _ in all_keys()}
    for key in ("RNG_SEED", "TRAIN.DETERMINISTIC", "TRAIN.AUTO_RESUME", "DATA_LOADER.NUM_WORKERS",
                "DATA.MAX_FAILURE_RATIO", "DATA.DECODE_TIMEOUT_S", "TRAIN.SKIP_NONFINITE",
                "TRAIN.CHECKPOINT_PERIOD_ITERS"):
        assert key in names, key
    assert TINY["DATA"]["DECODE_TIMEOUT_S"] > 0
