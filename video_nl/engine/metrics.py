"""Accuracy metrics on score matrices (videos × classes) and label vectors."""
from __future__ import annotations

import torch


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, *, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of rows whose label is among the ``k`` highest scores, for each ``k`` (clamped to #classes)."""
    if scores.numel() == 0:
        return [0 for _ in ks]
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices
    hits = top == labels.view(-1, 1)
    return [int(hits[:, :min(k, kmax)].any(dim=1).sum()) for k in ks]


def topk_errors(scores: torch.Tensor, labels: torch.Tensor, *, ks: tuple[int, ...] = (1, 5)) -> list[float]:
    """Top-k error in percent for each ``k`` (0 for an empty batch)."""
    n = max(len(labels), 1)
    return [100.0 * (1 - c / n) if len(labels) else 0.0 for c in topk_correct(scores, labels, ks=ks)]


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, *, num_classes: int) -> torch.Tensor:
    """``C[i, j]`` = videos of class ``i`` predicted as ``j`` (``predictions`` -1 = no prediction, dropped)."""
    keep = predictions >= 0
    flat = labels[keep] * num_classes + predictions[keep]
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, *, num_classes: int) -> list[float | None]:
    """Accuracy (percent) per class over that class's videos; None for classes without videos."""
    out: list[float | None] = []
    for c in range(num_classes):
        mask = labels == c
        out.append(100.0 * float((predictions[mask] == c).float().mean()) if mask.any() else None)
    return out


def mean_class_accuracy(per_class: list[float | None]) -> float:
    """Mean of the per-class accuracies over classes that have videos."""
    present = [a for a in per_class if a is not None]
    return sum(present) / len(present) if present else 0.0
