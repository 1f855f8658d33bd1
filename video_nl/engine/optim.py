"""SGD with per-group weight decay, and the LR policies (updated every iteration at a fractional epoch).

Policies (``SOLVER.LR_POLICY``), with ``e`` the fractional epoch (``epoch + iter / iters_per_epoch``):

* ``cosine``: ``end + (base - end) * (1 + cos(pi * e / MAX_EPOCH)) / 2``.
* ``steps_with_relative_lrs``: ``BASE_LR * LRS[i]`` for the last ``i`` with ``STEPS[i] <= e``.

Both start with a linear warmup from ``WARMUP_START_LR`` to the policy's value at ``WARMUP_EPOCHS`` when
``WARMUP_EPOCHS > 0`` (PySlowFast's definition).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(model: nn.Module, *, weight_decay: float, norm_weight_decay: float) -> list[dict]:
    """Two SGD groups: norm-layer parameters (BN/SyncBN/GN/LN, incl. those inside context blocks) get
    ``norm_weight_decay``, everything else ``weight_decay``. Frozen parameters are left out."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, _NORM_TYPES) for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if id(p) in norm_params else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "default"},
              {"params": no_decay, "weight_decay": norm_weight_decay, "name": "norm"}]
    return [g for g in groups if g["params"]]


def build_optimizer(cfg: Any, model: nn.Module) -> torch.optim.SGD:
    """SGD (momentum, Nesterov, dampening) over :func:`param_groups`; the LR is set each iteration."""
    groups = param_groups(model, weight_decay=cfg.SOLVER.WEIGHT_DECAY, norm_weight_decay=cfg.BN.WEIGHT_DECAY)
    return torch.optim.SGD(groups, lr=lr_at_epoch(cfg, 0.0), momentum=cfg.SOLVER.MOMENTUM,
                           dampening=cfg.SOLVER.DAMPENING, nesterov=cfg.SOLVER.NESTEROV)


def _policy_lr(solver: Any, epoch: float) -> float:
    if solver.LR_POLICY == "cosine":
        return solver.COSINE_END_LR + (solver.BASE_LR - solver.COSINE_END_LR) * (
            1.0 + math.cos(math.pi * epoch / solver.MAX_EPOCH)) / 2.0
    index = max(i for i, start in enumerate(solver.STEPS) if start <= epoch) if epoch >= solver.STEPS[0] else 0
    return solver.BASE_LR * solver.LRS[index]


def lr_at_epoch(cfg: Any, epoch: float) -> float:
    """The learning rate at fractional epoch ``epoch`` (warmup included)."""
    solver = cfg.SOLVER
    if epoch < solver.WARMUP_EPOCHS:
        start, end = solver.WARMUP_START_LR, _policy_lr(solver, solver.WARMUP_EPOCHS)
        return start + (end - start) * epoch / solver.WARMUP_EPOCHS
    return _policy_lr(solver, epoch)


class LRScheduler:
    """Sets every group's LR from :func:`lr_at_epoch` once per iteration; its state is the last position."""

    def __init__(self, cfg: Any, optimizer: torch.optim.Optimizer, *, iters_per_epoch: int) -> None:
        self.cfg = cfg
        self.optimizer = optimizer
        self.iters_per_epoch = iters_per_epoch
        self.epoch_float = 0.0

    def step(self, *, epoch: int, iteration: int) -> float:
        """Set the LR for ``iteration`` (0-based) of ``epoch`` (0-based) and return it."""
        self.epoch_float = epoch + iteration / self.iters_per_epoch
        lr = lr_at_epoch(self.cfg, self.epoch_float)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        """Position of the last step (the LR itself is a pure function of it)."""
        return {"epoch_float": self.epoch_float, "iters_per_epoch": self.iters_per_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Restore the last position."""
        self.epoch_float = float(state["epoch_float"])
