"""TRAIN.ACCUM_STEPS: N micro-batches of B/N give one batch B's update; BN semantics, resume, DDP no_sync."""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers.engine_runs import make_dataset, tiny_overrides

from video_nl.config import ConfigError, load_config
from video_nl.engine import distributed as du
from video_nl.engine.checkpoint import list_checkpoints, unwrap
from video_nl.engine.logging import prepare_output_dir
from video_nl.engine.runtime import setup
from video_nl.engine.train import build_run, micro_batch_size, train, train_step
from video_nl.errors import UserError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("videos"))


def step_config(data: Path, out: Path, **extra: object):
    """Global batch 4, no dropout, non-zero residual branches (so every conv gets a gradient)."""
    keys = {"TRAIN.BATCH_SIZE": 4, "MODEL.DROPOUT_RATE": 0.0, "RESNET.ZERO_INIT_FINAL_BN": False,
            "TRAIN.EVAL_PERIOD": 0, "TEST.ENABLE": False, **extra}
    return load_config(None, tiny_overrides(data, out, **keys))


def one_step(data: Path, out: Path, *, frozen_bn: bool, **extra: object):
    """Build a training run (seeded init), take the first batch of epoch 0 and make one optimizer step."""
    cfg = step_config(data, out, **extra)
    info = setup(cfg)
    prepare_output_dir(cfg, info)
    run = build_run(cfg, info)
    before = params(run)
    run.model.train()
    if frozen_bn:
        for m in run.model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    run.train_loader.sampler.set_epoch(0)
    batch = next(iter(run.train_loader))
    run.scheduler.step(epoch=0, iteration=0)
    result = train_step(run, batch)
    run.stats.close()
    return run, result, before


def params(run) -> dict[str, torch.Tensor]:
    """Copies of the parameters, keyed as in checkpoints (no DDP prefix)."""
    return {k: v.detach().clone() for k, v in unwrap(run.model).named_parameters()}


def updates(run, before: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameter change since ``before``."""
    return {k: v - before[k] for k, v in params(run).items()}


def assert_same_update(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, rel: float) -> None:
    scale = max(float(v.abs().max()) for v in b.values())
    assert scale > 0
    nonzero = 0
    for name, value in b.items():
        torch.testing.assert_close(a[name], value, rtol=0, atol=rel * scale, msg=name)
        nonzero += bool(value.abs().max() > 1e-3 * scale)
    assert nonzero > len(b) // 2  # most parameters really moved


def test_micro_batches_give_the_full_batch_update_with_frozen_bn(data, tmp_path):
    full, r1, before = one_step(data, tmp_path / "full", frozen_bn=True)
    accum, r2, _ = one_step(data, tmp_path / "accum", frozen_bn=True, **{"TRAIN.ACCUM_STEPS": 4})
    assert_same_update(updates(accum, before), updates(full, before), rel=1e-5)
    assert (r2.clips, r2.top1, r2.top5) == (r1.clips, r1.top1, r1.top5) == (4, r1.top1, r1.top5)
    assert r2.loss == pytest.approx(r1.loss, rel=1e-5)


def test_bn_statistics_are_over_each_micro_batch(data, tmp_path):
    cfg = step_config(data, tmp_path / "init")
    setup(cfg)
    initial = build_run(cfg, du.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))).model
    run, _, _ = one_step(data, tmp_path / "bn", frozen_bn=False, **{"TRAIN.ACCUM_STEPS": 2})
    bn = run.model.stem.bn
    assert int(bn.num_batches_tracked) == 2  # one running-stat update per micro-batch
    # The same two updates by hand: micro-batch means of the stem conv output, momentum 0.1 twice.
    run.train_loader.sampler.set_epoch(0)
    video = next(iter(run.train_loader))["video"]
    mean = initial.stem.bn.running_mean.clone()
    for half in video.chunk(2):
        with torch.no_grad():
            out = initial.stem.conv(half)
        mean = 0.9 * mean + 0.1 * out.mean(dim=(0, 2, 3, 4))
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-4, atol=1e-5)


def test_batch_that_does_not_split_is_a_clear_error(data, tmp_path):
    with pytest.raises(ConfigError, match=r"TRAIN.BATCH_SIZE 6 .* TRAIN.ACCUM_STEPS 4"):
        step_config(data, tmp_path, **{"TRAIN.BATCH_SIZE": 6, "TRAIN.ACCUM_STEPS": 4})
    cfg = step_config(data, tmp_path, **{"TRAIN.BATCH_SIZE": 4, "TRAIN.ACCUM_STEPS": 4})
    assert micro_batch_size(cfg, du.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))) == 1
    two_ranks = du.DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(UserError, match=r"2 clips per rank, which does not split into TRAIN.ACCUM_STEPS 4.*multiple "
                                        r"of 8"):
        micro_batch_size(cfg, two_ranks)


def test_accumulated_run_checkpoints_and_resumes_mid_epoch_in_optimizer_steps(data, tmp_path):
    keys = {"TRAIN.ACCUM_STEPS": 2, "TRAIN.CHECKPOINT_PERIOD_ITERS": 1, "TRAIN.KEEP_CHECKPOINTS": 0}
    out = tmp_path / "whole"
    cfg = step_config(data, out, **keys)
    train(cfg, setup(cfg))
    names = [Path(p).name for p in list_checkpoints(str(out))]
    # 8 videos, global batch 4: 2 optimizer steps per epoch, whatever ACCUM_STEPS is.
    assert names == ["checkpoint_epoch_00000_iter_0000001.pyth", "checkpoint_epoch_00001.pyth",
                     "checkpoint_epoch_00001_iter_0000001.pyth", "checkpoint_epoch_00002.pyth"]
    mid = tmp_path / "resumed"
    (mid / "checkpoints").mkdir(parents=True)
    shutil.copy(out / "checkpoints" / names[2], mid / "checkpoints" / names[2])
    cfg = step_config(data, mid, **keys)
    train(cfg, setup(cfg))
    final = torch.load(mid / "checkpoints" / names[3], weights_only=True)
    reference = torch.load(out / "checkpoints" / names[3], weights_only=True)
    assert final["global_iteration"] == reference["global_iteration"] == 4
    for key, value in reference["model_state"].items():
        assert torch.equal(final["model_state"][key], value), key


# ---------------------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, data: Path, out: Path) -> None:
    """One rank of a 2-process gloo run: one accumulated, checkpointed step; counts gradient all-reduces."""
    import os

    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    calls = []

    def counting_hook(state, bucket):
        calls.append(bucket.index())
        return allreduce_hook(state, bucket)

    cfg = step_config(data, out, **{"TRAIN.ACCUM_STEPS": 2, "MODEL.ACT_CHECKPOINT": "all"})
    info = setup(cfg)
    prepare_output_dir(cfg, info)
    run = build_run(cfg, info)
    run.model.register_comm_hook(None, counting_hook)
    before = params(run)
    run.model.train()
    for m in run.model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    run.train_loader.sampler.set_epoch(0)
    run.scheduler.step(epoch=0, iteration=0)
    train_step(run, next(iter(run.train_loader)))
    run.stats.close()
    torch.save({"update": updates(run, before), "allreduce_calls": calls}, out / f"rank{rank}.pt")
    du.cleanup()


@pytest.mark.slow
def test_ddp_accumulation_syncs_once_per_step_and_matches_one_process(data, tmp_path):
    out = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(2, _free_port(), data, out), nprocs=2, join=True)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # The tiny model's gradients fit one DDP bucket: one all-reduce for the step (no_sync on the first micro-batch).
    assert ranks[0]["allreduce_calls"] == ranks[1]["allreduce_calls"] == [0]
    for name, value in ranks[0]["update"].items():
        assert torch.equal(ranks[1]["update"][name], value), name
    # One process, the same 4 clips in one batch, plain (no checkpointing, no accumulation): the same update.
    full, _, before = one_step(data, tmp_path / "single", frozen_bn=True)
    assert_same_update(ranks[0]["update"], updates(full, before), rel=1e-5)
