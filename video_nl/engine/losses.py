"""The training loss (``MODEL.LOSS_FUNC``) with optional per-class weights (``MODEL.CLASS_WEIGHTS``).

Both losses are a mean over videos of a per-video loss, so train (batch mean) and val (sum / videos) are on
the same scale:

* ``cross_entropy``: ``w[y] · CE(logits, y)`` (with ``TRAIN.LABEL_SMOOTHING`` in training);
* ``bce_logit``: ``mean_c w[c] · BCE(sigmoid(logits_c), t_c)`` over the K classes, with multi-hot targets
  ``t`` (multi-label lists) or one-hot targets built from integer labels. Equal to PyTorch's
  ``BCEWithLogitsLoss(weight=w)`` over a batch (PySlowFast's ``bce_logit``).

``balanced`` weights are ``w_c = mean_c'(n_c') / n_c`` from the train list's class counts ``n`` (sklearn's
"balanced" for single-label lists, where the expected weight of a training video is 1); a class without
train videos gets weight 1.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


def class_weights(cfg: Any, counts: Sequence[int]) -> torch.Tensor | None:
    """``MODEL.CLASS_WEIGHTS`` as a float tensor of K weights (``counts``: train videos per class), or None."""
    spec = cfg.MODEL.CLASS_WEIGHTS
    if isinstance(spec, str):  # "balanced" (the config checks the value)
        n = torch.tensor(list(counts), dtype=torch.float32)
        present = n > 0
        mean = n[present].mean() if present.any() else torch.tensor(1.0)
        return torch.where(present, mean / n.clamp_min(1), torch.ones_like(n))
    return torch.tensor([float(w) for w in spec]) if spec else None


@dataclass
class Criterion:
    """``MODEL.LOSS_FUNC`` over ``B×K`` logits and targets (``B`` class ids, or ``B×K`` 0/1 for bce_logit)."""

    loss_func: str
    num_classes: int
    weight: torch.Tensor | None = None
    label_smoothing: float = 0.0

    def per_video(self, logits: torch.Tensor, targets: torch.Tensor, *, training: bool = True) -> torch.Tensor:
        """The loss of each video (``B``), in fp32; label smoothing only when ``training``."""
        logits = logits.float()
        weight = None if self.weight is None else self.weight.to(logits.device)
        if self.loss_func == "cross_entropy":
            loss = F.cross_entropy(logits, targets, reduction="none",
                                   label_smoothing=self.label_smoothing if training else 0.0)
            return loss if weight is None else loss * weight[targets]
        if targets.dim() == 1:
            targets = F.one_hot(targets, self.num_classes)
        loss = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none")
        return (loss if weight is None else loss * weight).mean(dim=1)

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss: mean over the batch of :meth:`per_video`."""
        return self.per_video(logits, targets).mean()


def build_criterion(cfg: Any, counts: Sequence[int]) -> Criterion:
    """The criterion of ``cfg`` (``counts``: train videos per class, used by ``CLASS_WEIGHTS balanced``)."""
    return Criterion(loss_func=cfg.MODEL.LOSS_FUNC, num_classes=cfg.MODEL.NUM_CLASSES,
                     weight=class_weights(cfg, counts), label_smoothing=cfg.TRAIN.LABEL_SMOOTHING)
