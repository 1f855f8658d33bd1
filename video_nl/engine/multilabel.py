"""Multi-label evaluation (``DATA.MULTI_LABEL``): mAP in training, validation and testing, and the test outputs.

mAP is the mean over classes with at least one positive video of the average precision
(:func:`video_nl.engine.metrics.average_precision`, sklearn's / PySlowFast's definition), in percent.

* Training: over the epoch's clip predictions (sigmoid of the training logits, with dropout and augmentation
  on, as PySlowFast's train meter) gathered from every rank: the ``mAP`` of ``train_epoch``. A per-iteration
  mAP over one batch is mostly undefined (few classes have a positive in a batch), so ``train_iter`` logs the
  loss only. After a mid-epoch resume, the epoch's mAP covers the iterations run since.
* Validation: one clip per val video, all ranks: ``val_epoch`` ``mAP``.
* Testing: per video the views' sigmoid scores are aggregated (``TEST.ENSEMBLE_METHOD``, max = the Charades
  protocol). A video that failed to decode scores 0 for every class, so it ranks last (a miss for each of its
  labels). ``summary.json`` gets ``mAP``, ``first_view_mAP`` and per-k ``views_sweep`` mAPs; ``per_class.csv``
  the AP of every class; ``per_class_ap.png`` a bar chart.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import Any

import torch

from ..utils.io import atomic_json_dump, atomic_write
from . import distributed as du
from .metrics import average_precision, mean_average_precision, top_classes


def multi_hot(label_lists: Sequence[Sequence[int]], num_classes: int) -> torch.Tensor:
    """``N×K`` float 0/1 targets from each video's list of classes."""
    out = torch.zeros(len(label_lists), num_classes)
    for i, labels in enumerate(label_lists):
        out[i, list(labels)] = 1.0
    return out


def gathered_map(scores: list[torch.Tensor], targets: list[torch.Tensor], *, num_classes: int) -> float:
    """mAP (percent) of this rank's ``B×K`` score and target batches together with every other rank's."""
    local = (torch.cat(scores) if scores else torch.zeros(0, num_classes),
             torch.cat(targets) if targets else torch.zeros(0, num_classes))
    parts = du.all_gather_objects(local)
    all_scores = torch.cat([p[0] for p in parts])
    all_targets = torch.cat([p[1] for p in parts])
    return mean_average_precision(average_precision(all_scores, all_targets))


def _scores(records: list[dict], key: str, num_classes: int) -> torch.Tensor:
    """``N×K`` of ``key`` (``scores``, ``first`` or a sweep entry); a failed video scores 0 everywhere."""
    rows = [r[key] if r[key] is not None else torch.zeros(num_classes) for r in records]
    return torch.stack(rows) if rows else torch.zeros(0, num_classes)


def summarise(cfg: Any, records: list[dict], *, checkpoint: str, num_dropped_lines: int = 0) -> dict:
    """summary.json of a multi-label test: mAP (percent), first-view mAP, sweep, counts.

    Videos that fail to decode score 0 for every class (misses); list lines the parser dropped have no usable
    labels, so they cannot enter the mAP: ``num_listed``/``num_dropped_lines`` say how many there were."""
    k = cfg.MODEL.NUM_CLASSES
    targets = multi_hot([r["label"] for r in records], k)
    per_class = average_precision(_scores(records, "scores", k), targets)
    summary: dict[str, Any] = {
        "mAP": mean_average_precision(per_class),
        "first_view_mAP": mean_average_precision(average_precision(_scores(records, "first", k), targets)),
        "num_classes_with_positives": sum(a is not None for a in per_class),
        "num_videos": len(records), "num_failed": sum(not r["ok"] for r in records),
        "num_listed": len(records) + num_dropped_lines, "num_dropped_lines": num_dropped_lines,
        "views": cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS,
        "clips": cfg.TEST.NUM_ENSEMBLE_VIEWS, "crops": cfg.TEST.NUM_SPATIAL_CROPS,
        "crop_size": cfg.DATA.TEST_CROP_SIZE, "ensemble_method": cfg.TEST.ENSEMBLE_METHOD, "checkpoint": checkpoint,
    }
    if cfg.TEST.VIEWS_SWEEP:
        summary["views_sweep"] = {}
        for clips in sorted({c for r in records for c in r["sweep"]}):
            rows = [r["sweep"].get(clips) for r in records]
            s = torch.stack([x if x is not None else torch.zeros(k) for x in rows])
            summary["views_sweep"][str(clips)] = {"views": clips * cfg.TEST.NUM_SPATIAL_CROPS,
                                                  "mAP": mean_average_precision(average_precision(s, targets))}
    return summary


def summary_line(summary: dict) -> str:
    """The one-line test result for the log."""
    return (f"test: mAP {summary['mAP']:.2f}  first-view mAP {summary['first_view_mAP']:.2f}  "
            f"({summary['num_videos']} videos, {summary['num_failed']} failed, "
            f"{summary['num_classes_with_positives']} classes with positives)")


def write_outputs(cfg: Any, records: list[dict], summary: dict, names: list[str]) -> str:
    """predictions.json (labels and top-5 sigmoid scores), summary.json, per_class.csv (AP) and per_class_ap.png."""
    out = os.path.join(cfg.OUTPUT_DIR, "test")
    k = cfg.MODEL.NUM_CLASSES
    preds = []
    for r in records:
        entry = {"index": r["index"], "path": r["path"], "labels": list(r["label"]),
                 "label_names": [names[c] for c in r["label"]], "ok": r["ok"], "failure": r["failure"], "top5": []}
        if r["ok"]:
            entry["top5"] = top_classes(r["scores"], names)
        preds.append(entry)
    atomic_json_dump(preds, os.path.join(out, "predictions.json"))
    atomic_json_dump(summary, os.path.join(out, "summary.json"))
    targets = multi_hot([r["label"] for r in records], k)
    per_class = average_precision(_scores(records, "scores", k), targets)
    with atomic_write(os.path.join(out, "per_class.csv"), "w") as f:
        w = csv.writer(f)
        w.writerow(["class", "name", "num_positives", "AP"])
        for c in range(k):
            ap = per_class[c]
            w.writerow([c, names[c], int(targets[:, c].sum()), "" if ap is None else f"{100 * ap:.2f}"])
    plot_per_class_ap(per_class, names, os.path.join(out, "per_class_ap.png"))
    return out


def plot_per_class_ap(per_class: list[float | None], names: list[str], path: str) -> None:
    """Per-class AP (percent) as a horizontal bar chart, best class on top (classes without positives left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(((100 * ap, names[c]) for c, ap in enumerate(per_class) if ap is not None), reverse=True)
    fig, ax = plt.subplots(figsize=(8, min(2 + 0.22 * len(rows), 40)))
    ax.barh(range(len(rows)), [v for v, _ in rows], color="#3b75af")
    ax.set_yticks(range(len(rows)), [n for _, n in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("average precision (%)")
    ax.set_title(f"per-class AP, mAP {sum(v for v, _ in rows) / max(len(rows), 1):.2f}")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=80)
    plt.close(fig)
