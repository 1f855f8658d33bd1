"""Datasets and loaders on real mp4s, including every bad-input case."""
import pytest
import torch
from helpers.videos import random_video, write_audio_only

from video_nl.config import get_default_config
from video_nl.data.datasets import (EpochSampler, FailureTracker, MultiViewDataset, VideoClipDataset,
                                    build_test_loader, build_train_loader)
from video_nl.errors import UserError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    good = [str(root / f"v{i}.mp4") for i in range(3)]
    for i, path in enumerate(good):
        random_video(path, num_frames=12 + 4 * i, size=(32, 48), seed=i)
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video")
    raw = open(good[0], "rb").read()
    (root / "trunc.mp4").write_bytes(raw[: len(raw) // 2])
    write_audio_only(root / "audio.mp4")
    bad = [str(root / n) for n in ("missing.mp4", "zero.mp4", "text.mp4", "trunc.mp4", "audio.mp4")]
    lines = [f"{p} {i % 2}" for i, p in enumerate(good)]
    (root / "train.csv").write_text("\n".join(lines + [f"{p} 1" for p in bad] + [f"{good[0]} 7", "malformed"]) + "\n")
    (root / "test.csv").write_text("\n".join(lines + [f"{bad[3]} 0"]) + "\n")
    return root, good, bad


def _cfg(root, **kw):
    cfg = get_default_config()
    cfg.DATA.PATH_TO_DATA_DIR, cfg.MODEL.NUM_CLASSES = str(root), 2
    cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE = 4, 5  # span 16 > the 12-frame video: loops
    cfg.DATA.TRAIN_JITTER_SCALES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE = [32, 40], 32, 32
    cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS = 3, 3
    cfg.DATA_LOADER.NUM_WORKERS, cfg.TRAIN.BATCH_SIZE = 0, 4
    cfg.DATA.MAX_FAILURE_RATIO = 0.8
    for k, v in kw.items():
        section, key = k.split("__")
        setattr(getattr(cfg, section), key, v)
    return cfg


def test_train_items_substitute_and_report(data):
    root, good, bad = data
    ds = VideoClipDataset(_cfg(root), "train")
    assert len(ds) == 8 and [p.line_no for p in ds.problems] == [9, 10]  # label 7 and the malformed line
    seen = {}
    for i in range(len(ds)):
        item = ds[(0, i)]
        assert item["video"].shape == (3, 4, 32, 32) and ds.entries[item["index"]].path in good
        assert item["label"] == ds.entries[item["index"]].label
        for path, reason in item["failures"]:
            seen[path] = reason
    assert set(seen) == set(bad)
    assert {r.split()[0] for r in seen.values()} == {"missing", "zero-byte", "not", "truncated", "audio-only"}
    assert torch.equal(ds[(3, 1)]["video"], ds[(3, 1)]["video"])  # deterministic per (epoch, index)
    assert not torch.equal(ds[(3, 1)]["video"], ds[(4, 1)]["video"])


def test_train_loader_batches_and_failure_tracker(data):
    root, good, bad = data
    cfg = _cfg(root, DATA__DECODING_BACKEND="pyav")
    loader = build_train_loader(cfg, "train")
    loader.sampler.set_epoch(1)
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["video"].shape == (4, 3, 4, 32, 32)
    for b in batches:
        loader.failures.add(b["failures"])
    assert len(loader.failures.failed) == len(bad) + 2
    loader.failures.check()  # 7 of 10 <= 0.8
    strict = FailureTracker(name="train", total=10, max_ratio=0.5)
    strict.merge(loader.failures.state())
    with pytest.raises(UserError, match="failed"):
        strict.check()


def test_sampler_shards_and_epochs():
    a = EpochSampler(10, shuffle=True, seed=0, rank=0, world_size=3)
    b = EpochSampler(10, shuffle=True, seed=0, rank=1, world_size=3)
    assert len(a) == len(list(a)) == 4
    a.set_epoch(2)
    assert all(e == 2 for e, _ in a) and list(a) != [(2, i) for _, i in EpochSampler(10, shuffle=True, seed=0)]
    test = [EpochSampler(10, shuffle=False, seed=0, rank=r, world_size=3, pad=False) for r in range(3)]
    assert sorted(i for s in test for _, i in s) == list(range(10))
    assert b.world_size == 3


def test_decode_once_equals_per_view_and_failed_test_video(data):
    root, good, bad = data
    cfg = _cfg(root)
    once = list(build_test_loader(cfg, "test"))
    per_view = MultiViewDataset(cfg, "test", decode_once=False)
    assert len(once) == 4
    for item in once[:3]:
        assert item["ok"] and item["views"].shape == (9, 3, 4, 32, 32)
        assert torch.equal(item["views"], per_view[item["index"]]["views"])
    failed = once[3]
    assert not failed["ok"] and failed["views"].shape[0] == 0 and "truncated" in failed["failure"]


def test_clip_longer_than_video_loops(data):
    root, good, _ = data
    cfg = _cfg(root, DATA__NUM_FRAMES=8, DATA__SAMPLING_RATE=4)  # 29-frame span on 12..20-frame videos
    item = MultiViewDataset(cfg, "test")[0]
    assert item["ok"] and item["views"].shape == (9, 3, 8, 32, 32)


def test_too_many_bad_lines_stop_early(tmp_path, data):
    root, good, _ = data
    (tmp_path / "train.csv").write_text(f"{good[0]} 0\n" + "junk\n" * 5)
    with pytest.raises(UserError, match="MAX_FAILURE_RATIO"):
        build_train_loader(_cfg(tmp_path, DATA__MAX_FAILURE_RATIO=0.5), "train")


def test_train_attempts_cover_lists_within_the_failure_ratio():
    from video_nl.data.datasets import ALL_BAD_ODDS, max_attempts

    for ratio in (0.1, 0.5, 0.9, 0.99):
        assert ratio ** max_attempts(ratio, 50) <= ALL_BAD_ODDS
    assert max_attempts(0.0, 50) == 10
