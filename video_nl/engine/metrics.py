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


def class_scores(logits: torch.Tensor, *, act: str = "softmax") -> torch.Tensor:
    """``B×K`` class scores of ``B×K`` logits: the softmax distribution, or per-class sigmoid probabilities with
    ``act="sigmoid"`` (``MODEL.HEAD_ACT``, multi-label models)."""
    return torch.sigmoid(logits) if act == "sigmoid" else torch.softmax(logits, dim=1)


def top_classes(scores: torch.Tensor, names: list[str], *, k: int = 5) -> list[dict]:
    """The ``k`` best classes of one score vector: ``[{"class", "name", "score"}, ...]``, best first."""
    values, ids = scores.topk(min(k, len(scores)))
    return [{"class": int(i), "name": names[int(i)], "score": float(v)} for v, i in zip(values, ids)]


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


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> list[float | None]:
    """Per-class average precision of ``N×K`` scores against ``N×K`` 0/1 targets; None for a class without
    positives.

    The definition of sklearn's ``average_precision_score`` (and PySlowFast's ``get_map``): with the distinct
    scores of a class as thresholds, from high to low, ``AP = Σ_k (R_k − R_{k−1}) · P_k`` where ``P_k``/``R_k``
    are the precision/recall of "score ≥ k-th threshold" (tied scores enter together; no interpolation).
    """
    out: list[float | None] = []
    for c in range(scores.shape[1]):
        positives = targets[:, c] > 0
        num_pos = int(positives.sum())
        if num_pos == 0:
            out.append(None)
            continue
        order = torch.argsort(scores[:, c], descending=True, stable=True)
        sorted_scores, hits = scores[order, c], positives[order].double()
        tp, seen = hits.cumsum(0), torch.arange(1, len(hits) + 1, dtype=torch.float64)
        last_of_tie = torch.ones(len(hits), dtype=torch.bool)
        last_of_tie[:-1] = sorted_scores[1:] != sorted_scores[:-1]
        tp, seen = tp[last_of_tie], seen[last_of_tie]
        recall_steps = torch.diff(tp, prepend=tp.new_zeros(1)) / num_pos
        out.append(float((recall_steps * tp / seen).sum()))
    return out


def mean_average_precision(per_class_ap: list[float | None]) -> float:
    """Mean of the per-class APs over classes with at least one positive, in percent (0 when none has one)."""
    present = [a for a in per_class_ap if a is not None]
    return 100.0 * sum(present) / len(present) if present else 0.0
