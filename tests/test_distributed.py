"""torchrun (2 ranks, gloo) training and multi-view testing: each video scored exactly once."""
from __future__ import annotations

import json

import pytest
from helpers.engine_runs import make_dataset, read_log, tiny_args, torchrun
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from video_nl.engine.checkpoint import list_checkpoints


@pytest.mark.slow
def test_torchrun_two_ranks_train_and_test_every_video_once(tmp_path):
    data = make_dataset(tmp_path / "videos", train=8, val=3, test=5)  # 5 test videos: not divisible by 2
    out = tmp_path / "run"
    result = torchrun(2, "train", *tiny_args(data, out, **{"TEST.NUM_SPATIAL_CROPS": 3}))
    assert result.returncode == 0, result.stderr[-4000:]
    assert [p.rsplit("/", 1)[1] for p in list_checkpoints(str(out))] == \
        ["checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth"]
    records = read_log(out)
    iters = [r for r in records if r["_type"] == "train_iter"]
    assert len(iters) == 8  # rank 0 logs alone; 8 videos / global batch 2 = 4 iterations per epoch
    assert [r["num_videos"] for r in records if r["_type"] == "val_epoch"] == [3, 3]
    assert result.stdout.count("json_stats") == len(records)
    assert EventAccumulator(str(out / "tensorboard")).Reload().Tags()["scalars"]

    preds = json.loads((out / "test" / "predictions.json").read_text())
    assert sorted(p["index"] for p in preds) == [0, 1, 2, 3, 4]
    summary = json.loads((out / "test" / "summary.json").read_text())
    assert summary["num_videos"] == 5 and summary["views"] == 6
    top1 = 100 * sum(p["top5"][0]["class"] == p["label"] for p in preds) / len(preds)
    top5 = 100 * sum(p["label"] in [t["class"] for t in p["top5"]] for p in preds) / len(preds)
    assert summary["top1"] == pytest.approx(top1) and summary["top5"] == pytest.approx(top5)


@pytest.mark.slow
def test_global_batch_not_divisible_by_world_size_is_a_user_error(tmp_path):
    data = make_dataset(tmp_path / "videos", train=4, val=1, test=1)
    result = torchrun(2, "train", *tiny_args(data, tmp_path / "run", **{"TRAIN.BATCH_SIZE": 3}), timeout=300)
    assert result.returncode != 0
    assert "TRAIN.BATCH_SIZE" in result.stderr and "divisible by the world size (2)" in result.stderr
