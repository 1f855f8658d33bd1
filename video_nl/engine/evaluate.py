"""``video-nl test``: multi-view (clips × crops) testing, fully convolutional, every video scored once.

Per video: ``TEST.NUM_ENSEMBLE_VIEWS × TEST.NUM_SPATIAL_CROPS`` views at ``DATA.TEST_CROP_SIZE``; the model's
output is softmaxed per view (it is log-mean-prob on maps larger than the training window, logits
otherwise — softmax gives the view's class distribution either way), then aggregated with
``TEST.ENSEMBLE_METHOD`` (sum → reported as the mean probability, or max). With ``MODEL.HEAD_ACT sigmoid``
each view gets per-class sigmoid scores instead (multi-label, ``DATA.MULTI_LABEL``: mAP, see
:mod:`video_nl.engine.multilabel`). Under DDP each rank scores
``indices[rank::world]``; ``(index, scores)`` pairs are gathered and checked to cover each video once. A video that
fails to decode counts as wrong (``top1_full_list``/``top5_full_list`` also count the list lines the parser
dropped as wrong, see :func:`summarise`); when more than ``DATA.MAX_FAILURE_RATIO`` of the list failed, the test stops
with an error naming examples after writing its outputs (same decision on every rank). ``TEST.VIEWS_SWEEP``
adds 1/3/5/10-clip results from the same pass (k clips evenly spaced among the clips tested, all crops).

Outputs in ``OUTPUT_DIR/test/``: predictions.json, summary.json, per_class.csv, confusion_matrix.png.
"""
from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..data.lists import class_names
from ..errors import UserError
from ..utils.io import atomic_json_dump, atomic_write
from . import checkpoint as ckpt
from . import distributed as du
from .failures import check_all_ranks
from .logging import Progress, StatsLogger, prepare_output_dir, tensorboard_dir
from .runtime import autocast, is_compiled, iterate, load_model, log_compile_stats
from .metrics import class_scores, confusion_matrix, mean_class_accuracy, per_class_accuracy, top_classes, topk_correct
from . import multilabel

SWEEP_CLIPS = (1, 3, 5, 10)

#: Called after each scored test video with (model, item, 1-based video number on this rank, stats logger);
#: ``item`` is the test dataset's dict (``views`` ``V×3×T×H×W``, ``ok``, ``path``, ...). Hooks let callers add
#: per-video side outputs (e.g. attention montages in TensorBoard) without the evaluator knowing about them.
VideoHook = Callable[[torch.nn.Module, dict, int, StatsLogger], None]


def resolve_checkpoint(cfg: Any, explicit: str | None) -> str:
    """``--checkpoint``, else ``TEST.CHECKPOINT_FILE_PATH``, else the newest in ``OUTPUT_DIR/checkpoints``."""
    if explicit:
        return explicit
    if cfg.TEST.CHECKPOINT_FILE_PATH:
        return cfg.TEST.CHECKPOINT_FILE_PATH
    found = ckpt.list_checkpoints(cfg.OUTPUT_DIR)
    if not found:
        raise UserError(f"No checkpoint to test: pass --checkpoint PATH, set TEST.CHECKPOINT_FILE_PATH, or train "
                        f"first (looked in {ckpt.checkpoint_dir(cfg.OUTPUT_DIR)}).")
    return found[-1]


@torch.no_grad()
def view_probs(model: torch.nn.Module, views: torch.Tensor, *, chunk: int, device: torch.device,
               autocast: Any, act: str = "softmax") -> torch.Tensor:
    """Class scores of each view (``V×3×T×H×W`` → ``V×K``), ``chunk`` views per forward: the softmax
    distribution, or per-class sigmoid probabilities with ``act="sigmoid"`` (``MODEL.HEAD_ACT``).

    For a compiled model (``TRAIN.COMPILE``) a short last chunk is zero-padded to the chunk size, so every
    forward has one shape and compiles once (eval-mode outputs are per view: padding changes no result).
    """
    chunk = max(1, min(chunk, len(views)))
    pad = is_compiled(model)
    out = []
    for start in range(0, len(views), chunk):
        batch = views[start:start + chunk]
        n = len(batch)
        if pad and n < chunk:
            batch = torch.cat([batch, batch.new_zeros(chunk - n, *batch.shape[1:])])
        with autocast:
            logits = model(batch.to(device, non_blocking=True))[:n].float()
        out.append(class_scores(logits, act=act).cpu())
    return torch.cat(out)


def aggregate(probs: torch.Tensor, *, method: str) -> torch.Tensor:
    """Per-video score from ``V×K`` view probabilities: mean (``sum``, same ranking) or max."""
    return probs.mean(dim=0) if method == "sum" else probs.max(dim=0).values


def sweep_scores(probs: torch.Tensor, *, num_clips: int, num_crops: int, method: str) -> dict[int, torch.Tensor]:
    """Scores using k clips (evenly spaced among ``num_clips``) for each k in :data:`SWEEP_CLIPS` ≤ num_clips."""
    per_clip = probs.view(num_clips, num_crops, -1)
    out = {}
    for k in SWEEP_CLIPS:
        if k <= num_clips:
            clips = sorted({int(i * num_clips / k) for i in range(k)})
            out[k] = aggregate(per_clip[clips].flatten(0, 1), method=method)
    return out


def score_videos(cfg: Any, info: du.DistInfo, model: torch.nn.Module, loader: torch.utils.data.DataLoader,
                 stats: StatsLogger, video_hooks: Sequence[VideoHook] = ()) -> list[dict]:
    """Score this rank's share of the test ``loader``; one record per video (``scores`` None when it failed,
    added to ``loader.failures``). Each of ``video_hooks`` is called after every video."""
    chunk = max(cfg.TEST.BATCH_SIZE // info.world_size, 1)
    crops, clips = cfg.TEST.NUM_SPATIAL_CROPS, cfg.TEST.NUM_ENSEMBLE_VIEWS
    progress = Progress(total=len(loader), start=0, desc="test", enabled=info.is_main, period=cfg.LOG_PERIOD)
    records = []
    for n, item in enumerate(iterate(loader), start=1):
        label = [int(c) for c in item["label"]] if cfg.DATA.MULTI_LABEL else int(item["label"])
        record = {"index": int(item["index"]), "path": item["path"], "label": label,
                  "ok": bool(item["ok"]), "failure": item["failure"], "scores": None, "first": None, "sweep": {}}
        if item["ok"]:
            probs = view_probs(model, item["views"], chunk=chunk, device=info.device,
                               autocast=autocast(cfg, info.device), act=cfg.MODEL.HEAD_ACT)
            record.update(scores=aggregate(probs, method=cfg.TEST.ENSEMBLE_METHOD), first=probs[0])
            if cfg.TEST.VIEWS_SWEEP:
                record["sweep"] = sweep_scores(probs, num_clips=clips, num_crops=crops,
                                               method=cfg.TEST.ENSEMBLE_METHOD)
        else:
            loader.failures.add([(item["path"], item["failure"])])
        for hook in video_hooks:
            hook(model, item, n, stats)
        records.append(record)
        progress.update(iteration=n, fields={"videos": str(n)})
    progress.close()
    return records


def gather_records(records: list[dict], *, num_videos: int) -> list[dict]:
    """All ranks' records sorted by index: every one of the list's ``num_videos`` videos exactly once.

    The ranks' shares are disjoint and cover the list by construction (``EpochSampler`` without padding); a
    video scored twice or never is a bug, raised here rather than hidden by deduplication.
    """
    merged = sorted((r for part in du.all_gather_objects(records) for r in part), key=lambda r: r["index"])
    indices = [r["index"] for r in merged]
    if indices != list(range(num_videos)):
        twice = sorted({i for i in indices if indices.count(i) > 1})
        never = sorted(set(range(num_videos)) - set(indices))
        raise RuntimeError(f"Test shards do not split the list: {len(indices)} records for {num_videos} videos "
                           f"(scored more than once: {twice[:10]}, never: {never[:10]}).")
    return merged


def _stack(records: list[dict], key: str, num_classes: int) -> torch.Tensor:
    """``N×K`` scores of ``key`` (``scores`` or ``first``); failed videos get NaN rows (masked out by ``ok``)."""
    rows = [r[key] if r[key] is not None else torch.full((num_classes,), float("nan")) for r in records]
    return torch.stack(rows) if rows else torch.zeros(0, num_classes)


def accuracy(scores: torch.Tensor, labels: torch.Tensor, ok: torch.Tensor, *,
             denominator: int | None = None) -> tuple[float, float]:
    """Top-1/top-5 accuracy in percent over ``denominator`` videos (default: all of ``labels``); failed videos
    (``ok`` False) count as wrong, and so do the ``denominator - len(labels)`` that are not there at all."""
    n = max(len(labels) if denominator is None else denominator, 1)
    c1, c5 = topk_correct(scores[ok], labels[ok])
    return 100.0 * c1 / n, 100.0 * c5 / n


def summarise(cfg: Any, records: list[dict], *, checkpoint: str, num_dropped_lines: int = 0) -> dict:
    """summary.json's content: top-1/top-5/mean-class accuracy (percent), first-view top-1, sweep, counts
    (mAP instead with ``DATA.MULTI_LABEL``).

    ``top1``/``top5`` are over the videos of the list (``num_videos``; a video that fails to decode counts as
    wrong); ``top1_full_list``/``top5_full_list`` are over every listed line (``num_listed`` = ``num_videos`` +
    ``num_dropped_lines``, the lines the list parser dropped also counting as wrong, the Caffe2 way).
    """
    if cfg.DATA.MULTI_LABEL:
        return multilabel.summarise(cfg, records, checkpoint=checkpoint, num_dropped_lines=num_dropped_lines)
    k = cfg.MODEL.NUM_CLASSES
    labels = torch.tensor([r["label"] for r in records], dtype=torch.long)
    ok = torch.tensor([r["ok"] for r in records], dtype=torch.bool)
    scores = _stack(records, "scores", k)
    top1, top5 = accuracy(scores, labels, ok)
    num_listed = len(records) + num_dropped_lines
    top1_full, top5_full = accuracy(scores, labels, ok, denominator=num_listed)
    preds = torch.where(ok, scores.nan_to_num(-1).argmax(dim=1), torch.full_like(labels, -1))
    per_class = per_class_accuracy(preds, labels, num_classes=k)
    summary = {
        "top1": top1, "top5": top5, "mean_class_acc": mean_class_accuracy(per_class),
        "first_view_top1": accuracy(_stack(records, "first", k), labels, ok)[0],
        "num_videos": len(records), "num_failed": int((~ok).sum()),
        "top1_full_list": top1_full, "top5_full_list": top5_full, "num_listed": num_listed,
        "num_dropped_lines": num_dropped_lines,
        "views": cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS,
        "clips": cfg.TEST.NUM_ENSEMBLE_VIEWS, "crops": cfg.TEST.NUM_SPATIAL_CROPS,
        "crop_size": cfg.DATA.TEST_CROP_SIZE, "ensemble_method": cfg.TEST.ENSEMBLE_METHOD, "checkpoint": checkpoint,
    }
    if cfg.TEST.VIEWS_SWEEP:
        summary["views_sweep"] = {}
        for clips in SWEEP_CLIPS:
            if clips <= cfg.TEST.NUM_ENSEMBLE_VIEWS:
                rows = [r["sweep"].get(clips) if r["ok"] else None for r in records]
                s = torch.stack([x if x is not None else torch.full((k,), float("nan")) for x in rows])
                t1, t5 = accuracy(s, labels, ok)
                summary["views_sweep"][str(clips)] = {"views": clips * cfg.TEST.NUM_SPATIAL_CROPS, "top1": t1,
                                                      "top5": t5}
    return summary


def write_outputs(cfg: Any, records: list[dict], summary: dict, names: list[str]) -> str:
    """predictions.json, summary.json, per_class.csv and confusion_matrix.png under ``OUTPUT_DIR/test``."""
    if cfg.DATA.MULTI_LABEL:
        return multilabel.write_outputs(cfg, records, summary, names)
    out = os.path.join(cfg.OUTPUT_DIR, "test")
    k = cfg.MODEL.NUM_CLASSES
    preds = []
    for r in records:
        entry = {"index": r["index"], "path": r["path"], "label": r["label"], "label_name": names[r["label"]],
                 "ok": r["ok"], "failure": r["failure"], "top5": []}
        if r["ok"]:
            entry["top5"] = top_classes(r["scores"], names)
        preds.append(entry)
    atomic_json_dump(preds, os.path.join(out, "predictions.json"))
    atomic_json_dump(summary, os.path.join(out, "summary.json"))
    labels = torch.tensor([r["label"] for r in records], dtype=torch.long)
    predicted = torch.tensor([p["top5"][0]["class"] if p["top5"] else -1 for p in preds], dtype=torch.long)
    per_class = per_class_accuracy(predicted, labels, num_classes=k)
    with atomic_write(os.path.join(out, "per_class.csv"), "w") as f:
        w = csv.writer(f)
        w.writerow(["class", "name", "num_videos", "top1"])
        for c in range(k):
            acc = per_class[c]
            w.writerow([c, names[c], int((labels == c).sum()), "" if acc is None else f"{acc:.2f}"])
    plot_confusion(confusion_matrix(predicted, labels, num_classes=k), names, os.path.join(out, "confusion_matrix.png"))
    return out


def plot_confusion(matrix: torch.Tensor, names: list[str], path: str) -> None:
    """Row-normalised confusion matrix as a PNG (class names on the axes up to 60 classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(names)
    norm = matrix.float() / matrix.sum(dim=1, keepdim=True).clamp_min(1)
    size = min(4 + 0.35 * k, 40)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    if k <= 60:
        ax.set_xticks(range(k), names, rotation=90, fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=80)
    plt.close(fig)


def default_video_hooks(cfg: Any) -> list[VideoHook]:
    """The hooks ``video-nl test`` and ``video-nl train`` pass to :func:`run_test`: attention montages in
    TensorBoard when ``TENSORBOARD.ATTENTION`` (drawn by :mod:`video_nl.viz`)."""
    if not (cfg.TENSORBOARD.ENABLE and cfg.TENSORBOARD.ATTENTION):
        return []
    from ..viz.tensorboard import AttentionMontageHook

    return [AttentionMontageHook(cfg)]


def run_test(cfg: Any, info: du.DistInfo, *, checkpoint: str | None = None,
             video_hooks: Sequence[VideoHook] = ()) -> dict:
    """Multi-view test of ``checkpoint`` (resolved by :func:`resolve_checkpoint`); returns the summary.

    ``video_hooks`` are called after each scored video (see :data:`VideoHook`)."""
    from ..data.datasets import build_test_loader

    path = resolve_checkpoint(cfg, checkpoint)
    prepare_output_dir(cfg, info)
    stats = StatsLogger(output_dir=cfg.OUTPUT_DIR, enabled=info.is_main, tb_dir=tensorboard_dir(cfg))
    try:
        stats.info(f"testing {path}: {cfg.TEST.NUM_ENSEMBLE_VIEWS} clips x {cfg.TEST.NUM_SPATIAL_CROPS} crops at "
                   f"{cfg.DATA.TEST_CROP_SIZE}px, ensemble {cfg.TEST.ENSEMBLE_METHOD}")
        model = load_model(cfg, info, path)
        loader = build_test_loader(cfg, "test", distributed=info.distributed)
        records = gather_records(score_videos(cfg, info, model, loader, stats, video_hooks),
                                 num_videos=len(loader.dataset))
        log_compile_stats(cfg, stats, model, step=0)
        for r in records:  # every rank's failures, reported once by rank 0
            if not r["ok"]:
                stats.info(f"failed to load test video {r['path']}: {r['failure']} (counted as wrong)")
        summary = summarise(cfg, records, checkpoint=path, num_dropped_lines=len(loader.dataset.problems))
        if info.is_main:
            out = write_outputs(cfg, records, summary, class_names(cfg))
            stats.log("test_final", {k: v for k, v in summary.items() if not isinstance(v, dict)}, step=0)
            if cfg.DATA.MULTI_LABEL:
                stats.info(f"{multilabel.summary_line(summary)}; results in {out}")
            else:
                stats.info(f"test: top-1 {summary['top1']:.2f}  top-5 {summary['top5']:.2f}  mean-class "
                           f"{summary['mean_class_acc']:.2f}  ({summary['num_videos']} videos, "
                           f"{summary['num_failed']} failed); over all {summary['num_listed']} listed lines "
                           f"({summary['num_dropped_lines']} dropped by the list parser): top-1 "
                           f"{summary['top1_full_list']:.2f}  top-5 {summary['top5_full_list']:.2f}; results in {out}")
        du.barrier()
        check_all_ranks(loader.failures)  # after the outputs are written: a stop loses no results
        return summary
    finally:
        stats.close()


def main(args: argparse.Namespace) -> int | None:
    """``video-nl test --cfg FILE [--checkpoint PATH] [KEY VALUE ...]``."""
    info = du.init_distributed(args.cfg)
    try:
        run_test(args.cfg, info, checkpoint=args.checkpoint, video_hooks=default_video_hooks(args.cfg))
        return 0
    finally:
        du.cleanup()
