"""Engine units: LR policies, SGD groups, checkpoint files (atomic, naming, resume choice), load_checkpoint,
metrics and precise BN. Fast (no training runs)."""
from __future__ import annotations

import math
import os

import pytest
import torch
from helpers.numerics import assert_close_to_scale
from torch import nn

from video_nl.config import load_config
from video_nl.engine import checkpoint as ckpt
from video_nl.engine.metrics import confusion_matrix, mean_class_accuracy, per_class_accuracy, topk_correct
from video_nl.engine.optim import LRScheduler, build_optimizer, lr_at_epoch
from video_nl.engine.precise_bn import update_bn_stats
from video_nl.errors import UserError
from video_nl.models import build_model

TINY = ["MODEL.NUM_CLASSES", "3", "RESNET.DEPTH", "18", "RESNET.WIDTH_PER_GROUP", "4", "DATA.NUM_FRAMES", "4",
        "DATA.TRAIN_CROP_SIZE", "32", "NONLOCAL.LOCATION", "[[], [1], [], []]"]


def test_cosine_with_linear_warmup_per_iteration():
    cfg = load_config(None, ["SOLVER.BASE_LR", "0.1", "SOLVER.MAX_EPOCH", "10", "SOLVER.WARMUP_EPOCHS", "2",
                             "SOLVER.WARMUP_START_LR", "0.01", "SOLVER.COSINE_END_LR", "0.0"])
    at_warmup_end = 0.1 * (1 + math.cos(math.pi * 2 / 10)) / 2
    assert lr_at_epoch(cfg, 0.0) == pytest.approx(0.01)
    assert lr_at_epoch(cfg, 1.0) == pytest.approx(0.01 + (at_warmup_end - 0.01) / 2)
    assert lr_at_epoch(cfg, 5.0) == pytest.approx(0.05)
    assert lr_at_epoch(cfg, 10.0) == pytest.approx(0.0, abs=1e-12)
    sched = LRScheduler(cfg, torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), iters_per_epoch=4)
    assert sched.step(epoch=5, iteration=2) == pytest.approx(lr_at_epoch(cfg, 5.5))  # fractional epoch
    assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(lr_at_epoch(cfg, 5.5))


def test_steps_with_relative_lrs():
    cfg = load_config("configs/Kinetics/_base_/in1k.yaml")
    assert [lr_at_epoch(cfg, e) for e in (0, 43.99, 44, 87.5, 88, 117.9)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001])


def test_in1k_configs_take_the_recipe_over_the_model_files_scratch_recipe():
    cfg = load_config("configs/Kinetics/I3D_NLN_8x8_R50_IN1K.yaml")
    assert (cfg.MODEL.ARCH, cfg.SOLVER.LR_POLICY, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_EPOCH) == \
        ("i3d", "steps_with_relative_lrs", 0.01, 118)
    assert cfg.SOLVER.WARMUP_EPOCHS == 0 and cfg.TRAIN.CHECKPOINT_INFLATE and any(cfg.NONLOCAL.LOCATION)


def test_no_weight_decay_on_norm_parameters():
    cfg = load_config(None, TINY + ["SOLVER.WEIGHT_DECAY", "1e-4", "BN.WEIGHT_DECAY", "0.0"])
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    groups = {g["name"]: g for g in opt.param_groups}
    norm_ids = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                for p in m.parameters()}
    assert {id(p) for p in groups["norm"]["params"]} == norm_ids  # the non-local block's BN included
    assert groups["norm"]["weight_decay"] == 0.0 and groups["default"]["weight_decay"] == 1e-4
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_checkpoint_names_sort_in_training_order(tmp_path):
    names = [ckpt.checkpoint_name(epoch=e, iteration=i) for e, i in [(0, 7), (1, 0), (1, 3), (1, 12), (2, 0)]]
    assert names[0] == "checkpoint_epoch_00000_iter_0000007.pyth" and names[1] == "checkpoint_epoch_00001.pyth"
    assert sorted(names) == names
    for n in reversed(names):
        (tmp_path / "checkpoints").mkdir(exist_ok=True)
        (tmp_path / "checkpoints" / n).write_bytes(b"x")
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(str(tmp_path))] == names
    ckpt.prune_checkpoints(str(tmp_path), keep=2)
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(str(tmp_path))] == names[-2:]


class _Boom:
    """Pickling this raises (a save that fails half-way)."""

    def __reduce__(self):
        raise RuntimeError("disk full (simulated)")


def _save(path, model, epoch, extra=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = load_config(None)
    ckpt.save_checkpoint(path, model=model, optimizer=opt, scheduler=LRScheduler(cfg, opt, iters_per_epoch=1),
                         scaler=None, epoch=epoch, iteration=0, global_iteration=epoch, cfg=cfg,
                         rng_states=[ckpt.capture_rng_state()], meta={"source": "video_nl", **(extra or {})})


def test_atomic_save_keeps_the_old_file_when_the_write_fails(tmp_path):
    model = nn.Linear(3, 2)
    path = str(tmp_path / "checkpoints" / ckpt.checkpoint_name(epoch=1))
    _save(path, model, 1)
    before = open(path, "rb").read()
    with pytest.raises(RuntimeError, match="disk full"):
        _save(path, model, 2, extra={"boom": _Boom()})
    assert open(path, "rb").read() == before
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]  # no temporary left behind


def test_auto_resume_skips_an_unreadable_checkpoint(tmp_path):
    model = nn.Linear(3, 2)
    d = tmp_path / "checkpoints"
    _save(str(d / ckpt.checkpoint_name(epoch=1)), model, 1)
    good = open(d / ckpt.checkpoint_name(epoch=1), "rb").read()
    (d / ckpt.checkpoint_name(epoch=2)).write_bytes(good[: len(good) // 2])  # truncated (killed mid-copy)
    with pytest.warns(UserWarning, match="unreadable"):
        path, state = ckpt.newest_readable_checkpoint(str(tmp_path))
    assert path.endswith("checkpoint_epoch_00001.pyth") and state["epoch"] == 1


def test_rng_state_round_trip(tmp_path):
    import random

    import numpy as np

    state = ckpt.capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    torch.save(state, tmp_path / "rng.pt")
    ckpt.restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_load_checkpoint_accepts_training_convert_and_raw_files(tmp_path):
    cfg = load_config(None, TINY)
    src, dst = build_model(cfg), build_model(cfg)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))
    train_path = str(tmp_path / "train.pyth")
    _save(train_path, src, 1)
    torch.save({"model_state": src.state_dict(), "cfg": cfg.to_dict(), "meta": {"source": "caffe2"}},
               tmp_path / "convert.pyth")
    torch.save({"module." + k: v for k, v in src.state_dict().items()}, tmp_path / "raw_ddp.pth")
    for name in ("train.pyth", "convert.pyth", "raw_ddp.pth"):
        fresh = build_model(cfg)
        out = ckpt.load_checkpoint(fresh, str(tmp_path / name))
        assert "model_state" in out
        assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), src.state_dict().values()))
    other = build_model(load_config(None, TINY[:-2] + ["MODEL.NUM_CLASSES", "5"]))
    with pytest.raises(UserError, match="head.fc"):
        ckpt.load_checkpoint(other, train_path)
    del dst


def test_topk_and_class_metrics():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = torch.tensor([1, 2, 2, 1])
    assert topk_correct(scores, labels, ks=(1, 2, 5)) == [2, 4, 4]
    preds = scores.argmax(1)
    assert per_class_accuracy(preds, labels, num_classes=3) == [None, 50.0, 50.0]
    assert mean_class_accuracy(per_class_accuracy(preds, labels, num_classes=3)) == 50.0
    cm = confusion_matrix(torch.tensor([1, 0, 2, -1]), labels, num_classes=3)
    assert cm.sum() == 3 and cm[1, 1] == 1 and cm[2, 0] == 1 and cm[2, 2] == 1


def test_precise_bn_gives_the_true_mean_and_variance():
    torch.manual_seed(0)
    bn = nn.BatchNorm3d(2, momentum=0.5)
    model = nn.Sequential(bn)
    batches = [torch.randn(4, 2, 2, 3, 3) * (i + 1) + i for i in range(5)]
    assert update_bn_stats(model, iter(batches), num_batches=5) == 5
    allx = torch.cat(batches).transpose(0, 1).reshape(2, -1)
    assert_close_to_scale(bn.running_mean, allx.mean(1))
    n = allx.shape[1] // 5
    assert_close_to_scale(bn.running_var, allx.var(1, unbiased=False) * n / (n - 1), rel=1e-4)  # E[x²]−mean²
    assert model.training
