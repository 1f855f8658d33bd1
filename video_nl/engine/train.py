"""``video-nl train``: the training loop (single process or torchrun/DDP), then multi-view testing.

Pieces: ``runtime.setup`` (process group, seeds, determinism) → :func:`build_run` (model, optimiser, loaders,
logging) → ``resume.resume_or_init`` → per epoch :func:`train_epoch` (which calls :func:`train_step`), then
precise BN when a validation (every ``TRAIN.EVAL_PERIOD`` epochs) or an epoch-end checkpoint is due,
``validate.validate``, ``resume.save`` → ``evaluate.run_test`` when ``TEST.ENABLE``. See docs/engine.md for
the outputs and the checkpoint/resume rules.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..data.lists import class_counts
from ..errors import UserError
from ..utils.io import atomic_write
from . import distributed as du
from .failures import FailureLog, check_all_ranks
from .logging import Progress, StatsLogger, Timer, format_eta, prepare_output_dir, tensorboard_dir
from .losses import Criterion, build_criterion
from .metrics import topk_correct
from .multilabel import gathered_map
from .optim import LRScheduler, build_optimizer
from .resume import resume_or_init, save
from .runtime import autocast, build_model_for, iterate, log_compile_stats, setup
from .state import Run
from .validate import precise_bn, validate


# ---------------------------------------------------------------------------------------------- setup
def make_loader(cfg: Any, info: du.DistInfo, *, split: str) -> torch.utils.data.DataLoader:
    """The data module's train/val loader (deterministic ``(epoch, index)`` order, global batch checked)."""
    from ..data.datasets import build_train_loader

    micro_batch_size(cfg, info)
    return build_train_loader(cfg, split, distributed=info.distributed)


def build_run(cfg: Any, info: du.DistInfo) -> Run:
    """Model, optimiser, LR scheduler, grad scaler, loaders and logging for a training run."""
    stats = StatsLogger(output_dir=cfg.OUTPUT_DIR, enabled=info.is_main, tb_dir=tensorboard_dir(cfg))
    model = build_model_for(cfg, info, distributed_wrap=True)
    train_loader = make_loader(cfg, info, split="train")
    iters = len(train_loader)
    if iters == 0:
        raise UserError(f"The train list has fewer videos ({len(train_loader.dataset)}) than one global batch "
                        f"(TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE}); lower TRAIN.BATCH_SIZE.")
    val_loader = make_loader(cfg, info, split="val") if cfg.TRAIN.EVAL_PERIOD > 0 else None
    optimizer = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler("cuda") if cfg.TRAIN.MIXED_PRECISION == "fp16" else None
    criterion = build_criterion(cfg, class_counts(train_loader.dataset.entries, cfg.MODEL.NUM_CLASSES))
    if criterion.weight is not None:
        stats.info(f"{criterion.loss_func} with per-class weights (MODEL.CLASS_WEIGHTS): "
                   f"{[round(w, 4) for w in criterion.weight.tolist()]}")
    return Run(cfg=cfg, dist=info, model=model, optimizer=optimizer,
               scheduler=LRScheduler(cfg, optimizer, iters_per_epoch=iters), scaler=scaler,
               train_loader=train_loader, val_loader=val_loader, stats=stats,
               failures=FailureLog(report=stats.info), iters_per_epoch=iters, criterion=criterion)


def log_model_info(run: Run) -> None:
    """Params and GFLOPs (``video_nl.models.info.model_info``) at the start of training."""
    if not (run.cfg.LOG_MODEL_INFO and run.dist.is_main):
        return
    from ..models.info import model_info

    info = model_info(run.cfg)
    run.stats.info(f"model: {info['params'] / 1e6:.2f}M params, {info['gflops']:.2f} GFLOPs per "
                   f"{run.cfg.DATA.NUM_FRAMES}x{run.cfg.DATA.TRAIN_CROP_SIZE}^2 clip, context blocks: "
                   f"{[b['name'] if isinstance(b, dict) else str(b) for b in info.get('context_blocks', [])]}")


# ---------------------------------------------------------------------------------------------- step
@dataclass
class StepResult:
    """Per-iteration numbers, already summed over ranks; multi-label runs also keep this rank's sigmoid
    ``scores`` and ``targets`` (``B×K``, CPU) for the epoch's mAP (top1/top5 are 0 then)."""

    loss: float
    top1: float
    top5: float
    clips: float
    failed: float
    skipped: bool
    scores: torch.Tensor | None = None
    targets: torch.Tensor | None = None


def micro_batch_size(cfg: Any, info: du.DistInfo) -> int:
    """Clips per forward: ``TRAIN.BATCH_SIZE / world size / TRAIN.ACCUM_STEPS`` (a UserError unless exact)."""
    per_rank = du.per_rank_batch_size(cfg.TRAIN.BATCH_SIZE, num_ranks=info.world_size, key="TRAIN.BATCH_SIZE")
    steps = cfg.TRAIN.ACCUM_STEPS
    if per_rank % steps:
        raise UserError(f"TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} over {info.world_size} rank(s) is {per_rank} clips "
                        f"per rank, which does not split into TRAIN.ACCUM_STEPS {steps} equal micro-batches. Use a "
                        f"global batch that is a multiple of {info.world_size * steps} (world size x ACCUM_STEPS).")
    return per_rank // steps


def train_step(run: Run, batch: dict) -> StepResult:
    """One optimizer step on one loaded batch: forward/backward of its ``TRAIN.ACCUM_STEPS`` micro-batches
    (gradients summed, DDP all-reduce on the last only), then a non-finite check over all ranks, clip, SGD."""
    cfg, device = run.cfg, run.dist.device
    video = batch["video"].to(device, non_blocking=True)
    if cfg.TRAIN.CHANNELS_LAST:
        video = video.contiguous(memory_format=torch.channels_last_3d)
    labels = torch.as_tensor(batch["label"]).to(device, non_blocking=True)
    failures = list(batch.get("failures") or [])
    run.failures.record(failures)
    run.train_loader.failures.add(failures)
    multi = cfg.DATA.MULTI_LABEL
    acc = accumulate_gradients(cfg, run.model, video, labels, criterion=run.criterion, device=device,
                               scaler=run.scaler)
    totals = du.all_reduce_sum([acc.loss_sum, acc.top1, acc.top5, len(labels), len(failures), acc.nonfinite],
                               device=device)
    skipped = totals[5] > 0
    if skipped:
        _handle_nonfinite(run)
    else:
        _step(run)
    return StepResult(loss=totals[0] / totals[3], top1=totals[1], top5=totals[2], clips=totals[3],
                      failed=totals[4], skipped=skipped,
                      scores=acc.scores if multi else None, targets=labels.detach().cpu() if multi else None)


@dataclass
class Accumulated:
    """What :func:`accumulate_gradients` saw on this rank: summed loss × clips, top-1/top-5 correct counts
    (0 for multi-label), 1.0 if a micro-batch loss was non-finite (else 0.0), and with ``DATA.MULTI_LABEL`` the
    per-class sigmoid scores (``B×K``, CPU) for the epoch's mAP."""

    loss_sum: float
    top1: float
    top5: float
    nonfinite: float
    scores: torch.Tensor | None = None


def accumulate_gradients(cfg: Any, model: nn.Module, video: torch.Tensor, labels: torch.Tensor, *,
                         criterion: Criterion, device: torch.device,
                         scaler: torch.amp.GradScaler | None = None) -> Accumulated:
    """Zero ``model``'s gradients, then forward + backward each of the ``TRAIN.ACCUM_STEPS`` equal micro-batches
    of this rank's batch (``B×3×T×H×W``; ``labels`` ``B`` class ids or ``B×K`` multi-hot), each ``criterion``
    loss scaled by 1/ACCUM_STEPS so the gradient is the batch mean's; under DDP only the last micro-batch
    all-reduces."""
    steps = cfg.TRAIN.ACCUM_STEPS  # the loader's batches are full and divide by it (micro_batch_size)
    multi = cfg.DATA.MULTI_LABEL
    model.zero_grad(set_to_none=True)
    losses, scores, top1, top5 = [], [], 0.0, 0.0
    for i, (v, y) in enumerate(zip(video.chunk(steps), labels.chunk(steps))):
        with _grad_sync(model, enabled=i == steps - 1):
            with autocast(cfg, device):
                logits = model(v)
            loss = criterion(logits, y)
            (scaler.scale(loss / steps) if scaler is not None else loss / steps).backward()
        losses.append(loss.detach().double() * len(y))
        if multi:
            scores.append(torch.sigmoid(logits.detach().float()).cpu())
        else:
            c1, c5 = topk_correct(logits.detach().float(), y)
            top1, top5 = top1 + c1, top5 + c5
    loss_sum = float(torch.stack(losses).sum())
    return Accumulated(loss_sum=loss_sum, top1=top1, top5=top5, nonfinite=0.0 if math.isfinite(loss_sum) else 1.0,
                       scores=torch.cat(scores) if multi else None)


def _grad_sync(model: nn.Module, *, enabled: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` (gradients accumulate locally, no all-reduce) unless ``enabled`` or not under DDP."""
    if enabled or not isinstance(model, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def _handle_nonfinite(run: Run) -> None:
    where = f"epoch {run.epoch + 1}, iteration {run.iteration + 1}"
    if not run.cfg.TRAIN.SKIP_NONFINITE:
        kept = run.last_checkpoint or "none written yet"
        raise UserError(f"The training loss became NaN/inf at {where}. Stopped without writing a checkpoint; the "
                        f"last good one is {kept}. Lower SOLVER.BASE_LR, enable SOLVER.CLIP_GRAD_L2NORM, check the "
                        f"data, or set TRAIN.SKIP_NONFINITE True to skip such steps.")
    run.optimizer.zero_grad(set_to_none=True)
    run.skipped_steps += 1
    run.stats.info(f"skipped the step at {where}: non-finite loss ({run.skipped_steps} skipped so far)")


def _step(run: Run) -> None:
    """Clip (``SOLVER.CLIP_GRAD_L2NORM``) and apply the accumulated gradients (through the GradScaler for fp16)."""
    clip = run.cfg.SOLVER.CLIP_GRAD_L2NORM
    if run.scaler is not None:
        if clip > 0:
            run.scaler.unscale_(run.optimizer)
            nn.utils.clip_grad_norm_(run.model.parameters(), clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        return
    if clip > 0:
        nn.utils.clip_grad_norm_(run.model.parameters(), clip)
    run.optimizer.step()


# ---------------------------------------------------------------------------------------------- epoch
@dataclass
class EpochMeter:
    """Sums over the iterations of one epoch."""

    loss: float = 0.0
    top1: float = 0.0
    top5: float = 0.0
    clips: float = 0.0
    iters: int = 0
    data_time: float = 0.0
    iter_time: float = 0.0
    scores: list[torch.Tensor] = field(default_factory=list)
    targets: list[torch.Tensor] = field(default_factory=list)

    def add(self, r: StepResult, *, data_time: float, iter_time: float) -> None:
        """Accumulate one step."""
        if r.scores is not None and not r.skipped:
            self.scores.append(r.scores)
            self.targets.append(r.targets)
        self.loss += r.loss * r.clips
        self.top1 += r.top1
        self.top5 += r.top5
        self.clips += r.clips
        self.iters += 1
        self.data_time += data_time
        self.iter_time += iter_time


def _eta(run: Run, mean_iter_time: float) -> float:
    total = run.cfg.SOLVER.MAX_EPOCH * run.iters_per_epoch
    return (total - run.global_iteration) * mean_iter_time


def _errors(run: Run, top1: float, top5: float, clips: float) -> dict[str, float]:
    """``top1_err``/``top5_err`` in percent (nothing for multi-label runs: they report mAP per epoch)."""
    if run.cfg.DATA.MULTI_LABEL:
        return {}
    return {"top1_err": 100.0 * (1 - top1 / clips), "top5_err": 100.0 * (1 - top5 / clips)}


def _log_iter(run: Run, r: StepResult, *, data_time: float, iter_time: float, lr: float, eta: float) -> None:
    run.stats.log("train_iter", {
        "epoch": run.epoch + 1, "max_epoch": run.cfg.SOLVER.MAX_EPOCH, "iter": run.iteration,
        "iters_per_epoch": run.iters_per_epoch, "global_iter": run.global_iteration, "loss": r.loss, "lr": lr,
        **_errors(run, r.top1, r.top5, r.clips),
        "clips_per_s": r.clips / max(iter_time, 1e-9), "data_time": data_time, "iter_time": iter_time,
        "eta": format_eta(eta), "skipped_steps": run.skipped_steps,
    }, step=run.global_iteration)


def _log_epoch(run: Run, m: EpochMeter, *, lr: float, wall: float, num_failed: int) -> None:
    n = max(m.clips, 1)
    accuracy = ({"mAP": gathered_map(m.scores, m.targets, num_classes=run.cfg.MODEL.NUM_CLASSES)}
                if run.cfg.DATA.MULTI_LABEL else _errors(run, m.top1, m.top5, n))
    run.stats.log("train_epoch", {
        "epoch": run.epoch, "max_epoch": run.cfg.SOLVER.MAX_EPOCH, "loss": m.loss / n, "lr": lr, **accuracy,
        "clips_per_s": m.clips / max(m.iter_time, 1e-9), "data_time": m.data_time / max(m.iters, 1),
        "iter_time": m.iter_time / max(m.iters, 1),
        "data_wait_pct": 100.0 * m.data_time / max(m.iter_time, 1e-9), "num_failed_videos": num_failed,
        "skipped_steps": run.skipped_steps, "epoch_time_s": wall,
    }, step=run.epoch)


def train_epoch(run: Run) -> None:
    """One epoch from ``run.iteration`` on (mid-epoch resume skips done batches without loading them)."""
    cfg = run.cfg
    run.model.train()
    run.failures.reset()
    per_rank = run.train_loader.batch_size
    run.train_loader.sampler.set_epoch(run.epoch, start=run.iteration * per_rank)
    progress = Progress(total=run.iters_per_epoch, start=run.iteration, desc=f"epoch {run.epoch + 1}",
                        enabled=run.dist.is_main, period=cfg.LOG_PERIOD)
    meter, timer, start, lr = EpochMeter(), Timer(), time.perf_counter(), 0.0
    for batch in timer.timed(iterate(run.train_loader)):
        if run.iteration >= run.iters_per_epoch:
            break
        lr = run.scheduler.step(epoch=run.epoch, iteration=run.iteration)
        result = train_step(run, batch)
        run.iteration += 1
        run.global_iteration += 1
        iter_time = timer.iteration_done()
        meter.add(result, data_time=timer.data_time, iter_time=iter_time)
        if result.failed:
            check_all_ranks(run.train_loader.failures)
        eta = _eta(run, meter.iter_time / meter.iters)
        progress.update(iteration=run.iteration, fields={"loss": f"{result.loss:.3f}", "lr": f"{lr:.4g}",
                                                         "clips/s": f"{result.clips / iter_time:.1f}",
                                                         "eta": format_eta(eta)})
        if run.iteration % cfg.LOG_PERIOD == 0:
            _log_iter(run, result, data_time=timer.data_time, iter_time=iter_time, lr=lr, eta=eta)
        period = cfg.TRAIN.CHECKPOINT_PERIOD_ITERS
        if period > 0 and run.global_iteration % period == 0 and run.iteration < run.iters_per_epoch:
            save(run, iteration=run.iteration)
    progress.close()
    num_failed = run.failures.end_epoch()
    run.epoch += 1
    run.iteration = 0
    _log_epoch(run, meter, lr=lr, wall=time.perf_counter() - start, num_failed=num_failed)
    log_compile_stats(cfg, run.stats, run.model, step=run.epoch)


def _due(epoch: int, period: int, last: int) -> bool:
    return period > 0 and (epoch % period == 0 or epoch == last)


# ---------------------------------------------------------------------------------------------- main
def train(cfg: Any, info: du.DistInfo) -> str:
    """Train to ``SOLVER.MAX_EPOCH`` (resuming if possible); returns the final checkpoint's path."""
    prepare_output_dir(cfg, info)
    run = build_run(cfg, info)
    try:
        if info.is_main:
            with atomic_write(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
                f.write(cfg.dump())
        log_model_info(run)
        resume_or_init(run)
        last = cfg.SOLVER.MAX_EPOCH
        while run.epoch < last:
            train_epoch(run)
            evaluate = _due(run.epoch, cfg.TRAIN.EVAL_PERIOD, last)
            checkpoint = _due(run.epoch, cfg.TRAIN.CHECKPOINT_PERIOD, last) or run.epoch == last
            if cfg.BN.USE_PRECISE_STATS and (evaluate or checkpoint):
                precise_bn(run, before=[name for name, due in (("val", evaluate), ("checkpoint", checkpoint)) if due])
            if evaluate:
                validate(run)
            if checkpoint:
                save(run, iteration=0)
        if not run.last_checkpoint:
            raise UserError(f"Nothing to train: OUTPUT_DIR {cfg.OUTPUT_DIR} has no checkpoint and "
                            f"SOLVER.MAX_EPOCH is {last}.")
        return run.last_checkpoint
    finally:
        run.stats.close()


def main(args: argparse.Namespace) -> int | None:
    """``video-nl train --cfg FILE [KEY VALUE ...]``."""
    cfg = args.cfg
    info = setup(cfg)
    try:
        final = train(cfg, info) if cfg.TRAIN.ENABLE else None
        if cfg.TEST.ENABLE:
            from .evaluate import default_video_hooks, run_test

            run_test(cfg, info, checkpoint=final, video_hooks=default_video_hooks(cfg))
        if final and info.is_main:
            print(f"[video_nl] done: final checkpoint {final}", flush=True)
        return 0
    finally:
        du.cleanup()
