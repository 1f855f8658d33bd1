"""Spatial transforms on whole clips at once: uint8 ``T×H×W×3`` frames → normalised float ``3×T×H×W``.

Every frame of a clip gets the same scale, crop and flip (one ``F.interpolate`` call over the T frames).
Randomness comes only from the ``torch.Generator`` passed in, so a clip is reproducible from its seed.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def short_side_resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``T×3×H×W`` float frames so the short side is ``size`` (aspect kept, rounded)."""
    h, w = frames.shape[-2:]
    if min(h, w) == size:
        return frames
    if h <= w:
        new_h, new_w = size, max(round(w * size / h), size)
    else:
        new_h, new_w = max(round(h * size / w), size), size
    return F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)


def _to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``T×H×W×3`` → float ``T×3×H×W`` on [0, 255]."""
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 T×H×W×3 frames, got {frames.dtype} {tuple(frames.shape)}")
    return frames.permute(0, 3, 1, 2).float()


def _normalise(frames: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """float ``...×3×H×W`` on [0,255] → ``(x/255 − mean)/std``, then channels first: ``...3×T×H×W``."""
    mean_t = torch.tensor(mean, dtype=frames.dtype).view(3, 1, 1) * 255.0
    scale = 1.0 / (torch.tensor(std, dtype=frames.dtype).view(3, 1, 1) * 255.0)
    return ((frames - mean_t) * scale).transpose(-4, -3).contiguous()


def train_transform(frames: torch.Tensor, *, jitter_scales: Sequence[int], crop_size: int, flip: bool,
                    mean: Sequence[float], std: Sequence[float], generator: torch.Generator) -> torch.Tensor:
    """Random short-side scale in ``jitter_scales`` (inclusive), random ``crop_size``² crop, optional random
    horizontal flip (p = 0.5), normalisation. uint8 ``T×H×W×3`` → float ``3×T×crop×crop``."""
    low, high = int(jitter_scales[0]), int(jitter_scales[1])
    scale = int(torch.randint(low, high + 1, (1,), generator=generator))
    x = short_side_resize(_to_float(frames), max(scale, crop_size))
    h, w = x.shape[-2:]
    top = int(torch.randint(0, h - crop_size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - crop_size + 1, (1,), generator=generator))
    x = x[..., top:top + crop_size, left:left + crop_size]
    if flip and bool(torch.rand((), generator=generator) < 0.5):
        x = x.flip(-1)
    return _normalise(x, mean, std)


def crop_offsets(length: int, crop_size: int, num_crops: int) -> list[int]:
    """Offsets of the test crops along a side of ``length``: 3 → first/centre/last, 1 → centre."""
    centre = (length - crop_size) // 2
    return [0, centre, length - crop_size] if num_crops == 3 else [centre]


def multi_view_transform(frames: torch.Tensor, *, crop_size: int, num_crops: int, mean: Sequence[float],
               std: Sequence[float]) -> torch.Tensor:
    """Short side → ``crop_size``, then ``num_crops`` (3 or 1) ``crop_size``² crops along the long side
    (left/centre/right for landscape, top/middle/bottom for portrait). uint8 ``T×H×W×3`` (or
    ``K×T×H×W×3`` for K clips at once) → float ``num_crops×3×T×c×c`` (``K·num_crops×3×T×c×c``, clip-major)."""
    clips = frames if frames.dim() == 5 else frames.unsqueeze(0)
    k, t = clips.shape[:2]
    x = short_side_resize(_to_float(clips.reshape(k * t, *clips.shape[2:])), crop_size)
    x = x.reshape(k, t, *x.shape[1:])
    h, w = x.shape[-2:]
    if w >= h:
        views = [x[..., :, o:o + crop_size] for o in crop_offsets(w, crop_size, num_crops)]
    else:
        views = [x[..., o:o + crop_size, :] for o in crop_offsets(h, crop_size, num_crops)]
    views = torch.stack(views, dim=1).reshape(k * len(views), t, 3, crop_size, crop_size)
    return _normalise(views, mean, std)
