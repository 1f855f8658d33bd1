"""`video-nl train` end to end on real mp4 files: outputs, kill -9 + auto-resume equality, NaN handling."""
from __future__ import annotations

import json

import pytest
import torch
from helpers.engine_runs import kill_when_written, make_dataset, read_log, tiny_args, tiny_overrides, video_nl
from helpers.numerics import assert_close_to_scale
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from video_nl.config import load_config
from video_nl.data.datasets import build_train_loader
from video_nl.engine.checkpoint import list_checkpoints
from video_nl.engine.precise_bn import update_bn_stats
from video_nl.errors import UserError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """One uninterrupted 2-epoch run (with mid-epoch checkpoints) followed by the multi-view test."""
    out = tmp_path_factory.mktemp("run")
    result = video_nl("train", *tiny_args(data, out, **{"TRAIN.CHECKPOINT_PERIOD_ITERS": 3,
                                                              "TRAIN.KEEP_CHECKPOINTS": 0}))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_train_writes_checkpoints_logs_tensorboard_and_test_results(finished):
    names = [p.rsplit("/", 1)[1] for p in list_checkpoints(str(finished))]
    assert names == ["checkpoint_epoch_00000_iter_0000003.pyth", "checkpoint_epoch_00001.pyth",
                     "checkpoint_epoch_00001_iter_0000002.pyth", "checkpoint_epoch_00002.pyth"]
    state = torch.load(finished / "checkpoints" / names[-1], weights_only=True)
    assert {"model_state", "optimizer_state", "scheduler_state", "scaler_state", "epoch", "iteration", "cfg",
            "rng_state", "meta"} <= set(state) and state["epoch"] == 2
    records = read_log(finished)
    kinds = [r["_type"] for r in records]
    assert kinds.count("train_iter") == 8 and kinds.count("train_epoch") == 2 and kinds.count("val_epoch") == 2
    assert kinds[-1] == "test_final"
    assert [(r["epoch"], r["before"]) for r in records if r["_type"] == "precise_bn"] == \
        [(1, ["val", "checkpoint"]), (2, ["val", "checkpoint"])]  # once per epoch, before both
    epoch = next(r for r in records if r["_type"] == "train_epoch")
    assert {"loss", "lr", "top1_err", "top5_err", "clips_per_s", "data_time", "iter_time", "num_failed_videos",
            "data_wait_pct"} <= set(epoch) and epoch["num_failed_videos"] == 0
    acc = EventAccumulator(str(finished / "tensorboard")).Reload()
    tags = acc.Tags()["scalars"]
    assert {"train_iter/loss", "train_iter/lr", "train_iter/data_time", "val_epoch/top1_err",
            "test_final/top1"} <= set(tags)
    assert [e.step for e in acc.Scalars("train_iter/loss")] == list(range(1, 9))
    summary = json.loads((finished / "test" / "summary.json").read_text())
    assert summary["num_videos"] == 5 and summary["views"] == 2 and summary["num_failed"] == 0
    assert {"top1", "top5", "mean_class_acc", "first_view_top1"} <= set(summary)
    preds = json.loads((finished / "test" / "predictions.json").read_text())
    assert [p["top5"][0]["name"].startswith("class_") for p in preds] == [True] * 5
    assert (finished / "test" / "confusion_matrix.png").stat().st_size > 0
    assert (finished / "test" / "per_class.csv").read_text().startswith("class,name,num_videos,top1")


@pytest.mark.slow
def test_kill9_then_auto_resume_reaches_the_same_weights(data, finished, tmp_path):
    out = tmp_path / "killed"
    args = ["train", *tiny_args(data, out, **{"TRAIN.CHECKPOINT_PERIOD_ITERS": 3, "TRAIN.KEEP_CHECKPOINTS": 0,
                                                   "TEST.ENABLE": False})]
    mid_epoch = out / "checkpoints" / "checkpoint_epoch_00001_iter_0000002.pyth"  # global iteration 6 of 8
    epoch_end = out / "checkpoints" / "checkpoint_epoch_00002.pyth"
    # Once the mid-epoch checkpoint exists, kill at once. What is left of the run (2 steps, validation,
    # precise BN, the epoch-end write) is the window the kill must land in.
    kill_when_written(mid_epoch, *args)
    assert mid_epoch.exists(), "the run never wrote its mid-epoch checkpoint"
    assert not epoch_end.exists(), "the kill landed after the epoch-end checkpoint: nothing left to resume"
    resumed = video_nl(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "_iter_0000002" in resumed.stdout
    final = torch.load(out / "checkpoints" / "checkpoint_epoch_00002.pyth", weights_only=True)
    reference = torch.load(finished / "checkpoints" / "checkpoint_epoch_00002.pyth", weights_only=True)
    assert final["model_state"].keys() == reference["model_state"].keys()
    for key, value in reference["model_state"].items():
        assert torch.equal(final["model_state"][key], value), key
    momentum = [s["momentum_buffer"] for s in reference["optimizer_state"]["state"].values()]
    assert all(torch.equal(a["momentum_buffer"], b) for a, b in zip(final["optimizer_state"]["state"].values(),
                                                                     momentum))


def test_nan_loss_stops_with_a_user_error_and_keeps_the_last_checkpoint(data, tmp_path):
    from video_nl.engine import train as engine_train

    out = tmp_path / "nan"
    cfg = load_config(None, tiny_overrides(data, out, **{"SOLVER.BASE_LR": 1e30, "SOLVER.WARMUP_EPOCHS": 0.0,
                                                         "TEST.ENABLE": False, "TRAIN.EVAL_PERIOD": 0,
                                                         "MODEL.DROPOUT_RATE": 0.0}))
    info = engine_train.setup(cfg)
    with pytest.raises(UserError, match=r"NaN/inf at epoch 1, iteration \d+.*none written yet"):
        engine_train.train(cfg, info)
    assert list_checkpoints(str(out)) == []
    cfg.TRAIN.SKIP_NONFINITE = True
    assert engine_train.train(cfg, info).endswith("checkpoint_epoch_00002.pyth")
    epochs = [r for r in read_log(out) if r["_type"] == "train_epoch"]
    assert epochs[-1]["skipped_steps"] > 0


def test_precise_bn_before_every_checkpoint_also_without_validation(data, tmp_path):
    """TRAIN.EVAL_PERIOD 0: each epoch-end checkpoint still holds precise BN statistics (the true mean/var over
    BN.NUM_BATCHES_PRECISE training batches of that epoch, recomputed here from the saved weights), and epochs
    with neither a checkpoint nor an evaluation due are left alone."""
    from video_nl.engine import train as engine_train
    from video_nl.models import build_model

    out = tmp_path / "run"
    cfg = load_config(None, tiny_overrides(data, out, **{"TRAIN.EVAL_PERIOD": 0, "TRAIN.CHECKPOINT_PERIOD": 2,
                                                         "SOLVER.MAX_EPOCH": 3, "TEST.ENABLE": False}))
    engine_train.train(cfg, engine_train.setup(cfg))
    loader = build_train_loader(cfg, "train")
    for epoch in (2, 3):
        saved = torch.load(out / "checkpoints" / f"checkpoint_epoch_{epoch:05d}.pyth", weights_only=True)
        model = build_model(cfg)
        model.load_state_dict(saved["model_state"])
        loader.sampler.set_epoch(epoch - 1)
        assert update_bn_stats(model, (b["video"] for b in loader), num_batches=2) == 2
        for key, value in model.state_dict().items():
            if key.endswith(("running_mean", "running_var")):
                assert_close_to_scale(saved["model_state"][key], value, msg=f"epoch {epoch} {key}")
    assert [(r["epoch"], r["before"], r["num_batches"]) for r in read_log(out) if r["_type"] == "precise_bn"] == \
        [(2, ["checkpoint"], 2), (3, ["checkpoint"], 2)]


def test_precise_bn_leaves_the_training_trajectory_alone(data, tmp_path):
    """Recomputing BN statistics runs forward passes (dropout included) but must not consume the run's random
    stream: with and without BN.USE_PRECISE_STATS the trained parameters are bitwise equal (only the BN
    buffers differ), so turning precise BN on, or a checkpoint becoming due, never changes what is learnt."""
    from video_nl.engine import train as engine_train

    finals = {}
    for precise in (True, False):
        out = tmp_path / f"precise_{precise}"
        cfg = load_config(None, tiny_overrides(data, out, **{"TRAIN.EVAL_PERIOD": 0, "TRAIN.CHECKPOINT_PERIOD": 1,
                                                             "BN.USE_PRECISE_STATS": precise, "TEST.ENABLE": False,
                                                             "MODEL.DROPOUT_RATE": 0.5}))
        finals[precise] = torch.load(engine_train.train(cfg, engine_train.setup(cfg)), weights_only=True)["model_state"]
    buffers = [k for k in finals[True] if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert buffers and any(not torch.equal(finals[True][k], finals[False][k]) for k in buffers)
    for key, value in finals[False].items():
        if key not in buffers:
            assert torch.equal(finals[True][key], value), key


def test_predict_prints_top_k_names_and_test_without_checkpoint_is_a_clear_error(data, finished, tmp_path):
    video = (data / "test.csv").read_text().split()[0]
    ckpt_path = str(finished / "checkpoints" / "checkpoint_epoch_00002.pyth")
    result = video_nl("predict", *tiny_args(data, finished), "--checkpoint", ckpt_path, "--video", video,
                      "--topk", "2", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    top = json.loads(result.stdout)["predictions"]
    assert [p["name"] for p in top] and {p["name"] for p in top} <= {"class_0", "class_1"}
    assert sum(p["score"] for p in top) == pytest.approx(1.0, abs=1e-4)
    missing = video_nl("test", *tiny_args(data, tmp_path / "empty"))
    assert missing.returncode == 2 and "No checkpoint to test" in missing.stderr
