"""Squeeze-and-excitation (SE) block for video maps, made the identity at initialisation.

s = 2σ(fc2(ReLU(fc1(GAP(x))))),  z = s ⊙ x   (GAP over T·H·W; fc1 C→max(1, int(C·ratio)), fc2 back to C)

Standard SE uses σ(·); we use 2σ(·) and zero-initialise fc2 (weight and bias), so s = 1 and the block
is exactly the identity at init, like every other context block. The range of s is (0, 2) instead of (0, 1).
"""
from __future__ import annotations

import torch
from torch import nn

from .common import avg_context, check_input, gated_scale, msra_init_, positive_width, zero_init_


class SEBlock(nn.Module):
    """SE block: B×C×T×H×W -> B×C×T×H×W (channel rescaling, no spatial attention)."""

    def __init__(self, *, dim: int, ratio: float = 0.0625) -> None:
        super().__init__()
        self.dim = dim
        hidden = positive_width(dim, ratio, "SE.RATIO")
        self.fc1 = nn.Conv3d(dim, hidden, 1)
        self.fc2 = nn.Conv3d(hidden, dim, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """fc1 MSRA (fan_out), fc2 zero: scale factor exactly 1."""
        msra_init_(self.fc1)
        zero_init_(self.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x B×C×T×H×W -> B×C×T×H×W."""
        check_input(x, self.dim, "SEBlock")
        return gated_scale(x, self.fc2(torch.relu(self.fc1(avg_context(x)))))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.fc1.out_channels}"
