"""End-of-epoch work of training: precise BN statistics and the 1-clip val accuracy (mAP for multi-label runs)."""
from __future__ import annotations

import torch

from . import checkpoint as ckpt
from . import distributed as du
from .failures import FailureLog, check_all_ranks
from .metrics import topk_correct
from .multilabel import gathered_map
from .precise_bn import update_bn_stats
from .runtime import autocast, iterate
from .state import Run


def precise_bn(run: Run, *, before: list[str]) -> None:
    """Recompute BN statistics over ``BN.NUM_BATCHES_PRECISE`` training batches (this epoch's order); logs a
    ``precise_bn`` line naming what it is done ``before`` (``val`` and/or ``checkpoint``).

    Called once at the end of an epoch whose validation or checkpoint is due (the Caffe2 recipe: every
    evaluation and every checkpoint sees precise statistics); mid-epoch checkpoints are resume points and
    keep the running averages. The forward passes run on a fork of the RNG (their dropout draws are thrown
    away), so recomputing statistics leaves the training run's random stream — and its trajectory — as it was.
    """
    loader = run.train_loader
    loader.sampler.set_epoch(run.epoch - 1)
    device = run.dist.device
    videos = (b["video"].to(device) for b in iterate(loader))
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked, device_type=device.type), autocast(run.cfg, device):
        used = update_bn_stats(ckpt.unwrap(run.model), videos, num_batches=run.cfg.BN.NUM_BATCHES_PRECISE)
    run.stats.log("precise_bn", {"epoch": run.epoch, "num_batches": used, "before": before}, step=run.epoch)


@torch.no_grad()
def validate(run: Run) -> dict:
    """1-clip accuracy on the val split (every video once over all ranks); logs a ``val_epoch`` line with
    ``top1_err``/``top5_err``, or ``mAP`` (percent) with ``DATA.MULTI_LABEL``. The loss is the training
    criterion's per-video mean (class weights included, label smoothing not).

    Val videos that fail to load are replaced (as in training), reported once per validation and counted in
    ``num_failed_videos``; then the val list's ``DATA.MAX_FAILURE_RATIO`` rule is applied on every rank.
    """
    model = ckpt.unwrap(run.model)
    model.eval()
    device = run.dist.device
    failures = FailureLog(report=run.stats.info, split="val")
    run.val_loader.sampler.set_epoch(run.epoch)
    multi = run.cfg.DATA.MULTI_LABEL
    loss = top1 = top5 = n = 0.0
    scores, targets = [], []
    for batch in iterate(run.val_loader):
        failures.record(batch["failures"])
        run.val_loader.failures.add(batch["failures"])
        video = batch["video"].to(device)
        labels = torch.as_tensor(batch["label"]).to(device)
        with autocast(run.cfg, device):
            out = model(video)
        loss += float(run.criterion.per_video(out, labels, training=False).sum())
        if multi:
            scores.append(torch.sigmoid(out.float()).cpu())
            targets.append(labels.cpu())
        else:
            c1, c5 = topk_correct(out.float(), labels)
            top1, top5 = top1 + c1, top5 + c5
        n += len(labels)
    loss, top1, top5, n = du.all_reduce_sum([loss, top1, top5, n], device=device)
    n = max(n, 1)
    accuracy = ({"mAP": gathered_map(scores, targets, num_classes=run.cfg.MODEL.NUM_CLASSES)} if multi else
                {"top1_err": 100.0 * (1 - top1 / n), "top5_err": 100.0 * (1 - top5 / n)})
    stats = {"epoch": run.epoch, "loss": loss / n, **accuracy, "num_videos": int(n),
             "num_failed_videos": failures.end_epoch()}
    run.stats.log("val_epoch", stats, step=run.epoch)
    check_all_ranks(run.val_loader.failures)
    model.train()
    return stats
