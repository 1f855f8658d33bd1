"""Global context (GC) block of GCNet (Cao et al., 2019) for video maps.

context  = Σ_j α_j x_j with α = softmax over all T·H·W positions of ``conv_mask`` (``pool="att"``),
           or the global average (``pool="avg"``)                              -> B×C×1×1×1
t(ctx)   = conv(P→C)(ReLU(LayerNorm([P,1,1,1])(conv(C→P)(ctx))))                 (P = max(1, int(C·ratio)))
fusion   = ``channel_mul`` first: x · 2σ(t_mul(ctx)), then ``channel_add``: + t_add(ctx)

The last conv of each transform is zero (weight and bias), so the block is the identity at init. For
``channel_mul`` this needs the factor 2σ(·) (= 1 at 0) instead of GCNet's σ(·), which halves x at init;
trained GCNet mul-branch weights therefore do not carry over unchanged (add-branch weights do).
"""
from __future__ import annotations

import torch
from torch import nn

from ...errors import UserError
from .common import (attention_pool, avg_context, check_input, gated_scale, msra_init_, position_softmax,
                     positive_width, zero_init_)

POOLS = ("att", "avg")
FUSIONS = ("channel_add", "channel_mul")


def _transform(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(dim, hidden, 1), nn.LayerNorm([hidden, 1, 1, 1]), nn.ReLU(inplace=True),
                         nn.Conv3d(hidden, dim, 1))


class GCBlock(nn.Module):
    """GC block: B×C×T×H×W -> B×C×T×H×W, identity at init.

    Submodules: ``conv_mask`` (att pooling), ``channel_add_conv`` / ``channel_mul_conv`` (mmcv names).
    """

    def __init__(self, *, dim: int, ratio: float = 0.25, pool: str = "att",
                 fusion: tuple[str, ...] = ("channel_add",)) -> None:
        super().__init__()
        fusion = tuple(fusion)
        if pool not in POOLS:
            raise UserError(f"GC.POOL must be one of {', '.join(POOLS)}; got {pool!r}.")
        if not fusion or any(f not in FUSIONS for f in fusion) or len(set(fusion)) != len(fusion):
            raise UserError(f"GC.FUSION must list channel_add and/or channel_mul (each at most once); got "
                            f"{list(fusion)}.")
        self.dim, self.pool, self.fusion = dim, pool, fusion
        hidden = positive_width(dim, ratio, "GC.RATIO")
        self.conv_mask = nn.Conv3d(dim, 1, 1) if pool == "att" else None
        self.channel_mul_conv = _transform(dim, hidden) if "channel_mul" in fusion else None
        self.channel_add_conv = _transform(dim, hidden) if "channel_add" in fusion else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """conv_mask kaiming fan_in (GCNet); first transform conv MSRA fan_out; last transform conv zero."""
        if self.conv_mask is not None:
            msra_init_(self.conv_mask, mode="fan_in")
        for branch in (self.channel_mul_conv, self.channel_add_conv):
            if branch is not None:
                msra_init_(branch[0])
                branch[1].reset_parameters()
                zero_init_(branch[3])

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Pooling weights B×T×H×W (fp32, summing to 1 per sample; uniform for ``pool="avg"``)."""
        check_input(x, self.dim, "GCBlock")
        b, _, t, h, w = x.shape
        if self.conv_mask is None:
            return x.new_full((b, t, h, w), 1.0 / (t * h * w), dtype=torch.float32)
        return position_softmax(self.conv_mask(x)).view(b, t, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x B×C×T×H×W -> B×C×T×H×W."""
        check_input(x, self.dim, "GCBlock")
        if self.conv_mask is None:
            ctx = avg_context(x)
        else:
            ctx = attention_pool(x, position_softmax(self.conv_mask(x)))
        out = x
        if self.channel_mul_conv is not None:
            out = gated_scale(out, self.channel_mul_conv(ctx))
        if self.channel_add_conv is not None:
            out = out + self.channel_add_conv(ctx)
        return out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, pool={self.pool}, fusion={self.fusion}"
