"""The state of one training run (:class:`Run`), shared by the training loop, resume/checkpointing and validation."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import distributed as du
from .failures import FailureLog
from .logging import StatsLogger
from .losses import Criterion
from .optim import LRScheduler


@dataclass
class Run:
    """Everything one training run holds; ``epoch``/``iteration`` count completed epochs / iterations."""

    cfg: Any
    dist: du.DistInfo
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler | None
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader | None
    stats: StatsLogger
    failures: FailureLog
    iters_per_epoch: int
    criterion: Criterion
    epoch: int = 0
    iteration: int = 0
    global_iteration: int = 0
    skipped_steps: int = 0
    last_checkpoint: str = ""
    iter_times: list[float] = field(default_factory=list)
