"""Simplified non-local (SNL) block of GCNet: one query-independent attention map.

z = x + W_v Σ_j α_j x_j,  α = softmax over all T·H·W positions of ``conv_mask`` (C→1),
W_v = ``conv_value`` (C→C, zero-initialised, weight and bias) so the block is the identity at init.
"""
from __future__ import annotations

import torch
from torch import nn

from .common import attention_pool, check_input, msra_init_, position_softmax, zero_init_


class SimplifiedNonLocalBlock(nn.Module):
    """SNL block: B×C×T×H×W -> B×C×T×H×W (broadcast add of a B×C×1×1×1 context)."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.conv_mask = nn.Conv3d(dim, 1, 1)
        self.conv_value = nn.Conv3d(dim, dim, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """conv_mask kaiming fan_in (as GCNet), conv_value zero."""
        msra_init_(self.conv_mask, mode="fan_in")
        zero_init_(self.conv_value)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Pooling weights B×T×H×W (fp32, summing to 1 per sample)."""
        check_input(x, self.dim, "SimplifiedNonLocalBlock")
        b, _, t, h, w = x.shape
        return position_softmax(self.conv_mask(x)).view(b, t, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x B×C×T×H×W -> B×C×T×H×W."""
        check_input(x, self.dim, "SimplifiedNonLocalBlock")
        return x + self.conv_value(attention_pool(x, position_softmax(self.conv_mask(x))))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
