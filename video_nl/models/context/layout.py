"""Re-layouts that turn a video feature map into batches of token sequences for attention.

A non-local block attends inside *attention groups*: temporal groups (``groups`` consecutive-frame
chunks folded into the batch) and then, by mode, the whole chunk (``spacetime``), one frame
(``space``) or one spatial position (``time``). ``to_tokens`` / ``from_tokens`` move between
B'×C×T×H×W maps and M×L×C token batches (M = B'·#sequences, L = sequence length).
"""
from __future__ import annotations

import torch

from ...errors import UserError

MODES = ("spacetime", "space", "time")


def fold_groups(x: torch.Tensor, groups: int) -> torch.Tensor:
    """B×C×T×H×W -> (B·G)×C×(T/G)×H×W, group g holding frames [g·T/G, (g+1)·T/G)."""
    b, c, t, h, w = x.shape
    if t % groups:
        raise UserError(f"A non-local block with {groups} temporal groups got a feature map with T={t} frames, "
                        f"which does not divide into {groups} equal groups. Set NONLOCAL.GROUP for this stage "
                        f"to a divisor of {t} (or change DATA.NUM_FRAMES).")
    if groups == 1:
        return x
    return x.view(b, c, groups, t // groups, h, w).transpose(1, 2).reshape(b * groups, c, t // groups, h, w)


def unfold_groups(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Inverse of :func:`fold_groups`: (B·G)×C×Tg×H×W -> B×C×(G·Tg)×H×W."""
    if groups == 1:
        return x
    bg, c, tg, h, w = x.shape
    return x.view(bg // groups, groups, c, tg, h, w).transpose(1, 2).reshape(bg // groups, c, groups * tg, h, w)


def to_tokens(x: torch.Tensor, mode: str) -> torch.Tensor:
    """B'×C×T×H×W -> M×L×C: spacetime (B', T·H·W), space (B'·T, H·W), time (B'·H·W, T)."""
    b, c, t, h, w = x.shape
    if mode == "spacetime":
        return x.flatten(2).transpose(1, 2)
    if mode == "space":
        return x.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)
    return x.permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)


def from_tokens(y: torch.Tensor, mode: str, b: int, t: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`to_tokens`: M×L×C -> b×C×t×h×w."""
    c = y.shape[-1]
    if mode == "spacetime":
        return y.transpose(1, 2).reshape(b, c, t, h, w)
    if mode == "space":
        return y.view(b, t, h, w, c).permute(0, 4, 1, 2, 3)
    return y.view(b, h, w, t, c).permute(0, 4, 3, 1, 2)
