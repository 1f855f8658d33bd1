"""Helpers shared by the context blocks: weight init, shape checks and query-independent pooling.

Shapes: ``x`` is B×C×T×H×W throughout; N = T·H·W.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError


def msra_init_(conv: nn.Conv3d, *, mode: str = "fan_out") -> None:
    """PySlowFast (``c2_msra_fill``) style: kaiming-normal weights (ReLU gain), zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode=mode, nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def zero_init_(module: nn.Module) -> None:
    """Set every parameter of ``module`` (a conv's weight and bias, a BN's γ and β) to zero."""
    for p in module.parameters(recurse=False):
        nn.init.zeros_(p)


def reset_bn_(bn: nn.BatchNorm3d, *, gamma: float) -> None:
    """Reset running statistics and set γ to ``gamma`` and β to 0."""
    bn.reset_running_stats()
    nn.init.constant_(bn.weight, gamma)
    nn.init.zeros_(bn.bias)


def check_input(x: torch.Tensor, dim: int, block: str) -> None:
    """Raise :class:`UserError` unless ``x`` is B×dim×T×H×W."""
    if x.dim() != 5 or x.shape[1] != dim:
        raise UserError(f"{block} expects a B×{dim}×T×H×W tensor but got shape {tuple(x.shape)}; context blocks "
                        f"act on 5-D video feature maps whose channel count equals the block's `dim`.")


def check_queries(queries: torch.Tensor, num_positions: int) -> torch.Tensor:
    """Flat query indices (t·H·W + h·W + w) as a 1-D LongTensor; UserError when out of [0, num_positions)."""
    queries = torch.as_tensor(queries).long().flatten()
    if queries.numel() and (queries.min() < 0 or queries.max() >= num_positions):
        raise UserError(f"Query indices must lie in [0, {num_positions}) (flat t·H·W + h·W + w into the block's "
                        f"input grid); got values from {int(queries.min())} to {int(queries.max())}.")
    return queries


def positive_width(dim: int, ratio: float, what: str) -> int:
    """``int(dim * ratio)`` clamped to at least 1 hidden unit; UserError for a non-positive ratio."""
    if ratio <= 0:
        raise UserError(f"{what} must be positive (got {ratio}); it sets the bottleneck width as a fraction of "
                        f"the block's {dim} input channels.")
    return max(1, int(dim * ratio))


def position_softmax(logits: torch.Tensor) -> torch.Tensor:
    """B×1×T×H×W logits -> B×N weights, softmax over all N positions, computed in fp32."""
    return torch.softmax(logits.flatten(1).float(), dim=1)


def attention_pool(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum over positions: x B×C×T×H×W, weights B×N -> context B×C×1×1×1."""
    ctx = torch.einsum("bcn,bn->bc", x.flatten(2), weights.to(x.dtype))
    return ctx[:, :, None, None, None]


def gated_scale(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Multiplicative fusion ``x · 2σ(logits)``: the factor is exactly 1 when the logits are 0.

    Used by SE and GC ``channel_mul`` so that a zero-initialised last layer gives the identity
    (the plain ``x · σ(logits)`` of SE/mmcv would halve x at initialisation).
    logits B×C×1×1×1 broadcast over T×H×W.
    """
    return x * (2.0 * torch.sigmoid(logits))


def avg_context(x: torch.Tensor) -> torch.Tensor:
    """Global average over T×H×W: B×C×T×H×W -> B×C×1×1×1."""
    return F.adaptive_avg_pool3d(x, 1)
