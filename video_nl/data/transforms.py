"""Spatial transforms on whole clips at once: uint8 ``T×H×W×3`` frames → normalised float ``3×T×H×W``.

Every frame of a clip gets the same scale, crop and flip (one resize over the T frames). Training computes only
the pixels its crop keeps, sampled from the source region they read (one ``grid_sample``); testing
keeps every crop, so it resizes whole frames with ``F.interpolate``.
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
    return F.interpolate(frames, size=_short_side_size(h, w, size), mode="bilinear", align_corners=False,
                         antialias=False)


def _short_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """``(height, width)`` after scaling the short side of ``h×w`` to ``size`` (aspect kept, rounded)."""
    if h <= w:
        return size, max(round(w * size / h), size)
    return max(round(h * size / w), size), size


def _check_frames(frames: torch.Tensor) -> None:
    """Raise ValueError unless ``frames`` is uint8 ``T×H×W×3``."""
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 T×H×W×3 frames, got {frames.dtype} {tuple(frames.shape)}")


def _to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``T×H×W×3`` → float ``T×3×H×W`` on [0, 255]."""
    _check_frames(frames)
    return frames.permute(0, 3, 1, 2).float()


def _normalise(frames: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """float ``...×3×H×W`` on [0,255] → ``(x/255 − mean)/std``, then channels first: ``...3×T×H×W``."""
    mean_t = torch.tensor(mean, dtype=frames.dtype).view(3, 1, 1) * 255.0
    scale = 1.0 / (torch.tensor(std, dtype=frames.dtype).view(3, 1, 1) * 255.0)
    return ((frames - mean_t) * scale).transpose(-4, -3).contiguous()


def _bilinear_taps(in_size: int, out_size: int, start: int, length: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two source pixels and the weight of the second for output pixels ``start .. start+length−1`` of a
    bilinear resize of one side from ``in_size`` to ``out_size``, with ``F.interpolate``'s convention
    (``align_corners=False``, no antialias: output ``j`` reads source position ``(j + ½)·in/out − ½``,
    clamped to the edges). Returns ``(i0, i1, frac)``, each of length ``length``."""
    dst = torch.arange(start, start + length, dtype=torch.float32)
    src = ((dst + 0.5) * (in_size / out_size) - 0.5).clamp_(min=0.0)
    i0 = src.long()
    i1 = (i0 + 1).clamp_(max=in_size - 1)
    return i0, i1, src - i0


def _resized_crop(frames: torch.Tensor, size: tuple[int, int], top: int, left: int, crop_size: int,
                  flip: bool) -> torch.Tensor:
    """The ``crop_size``² window at (``top``, ``left``) of the frames bilinearly resized to ``size`` (then
    optionally flipped): uint8 ``T×H×W×3`` → float ``T×3×crop×crop`` on [0, 255].

    Only the source region the window reads is converted to float, and only the window's pixels are
    interpolated: one ``grid_sample`` at the exact source positions of ``F.interpolate``'s resize. Equals
    ``F.interpolate`` of whole frames followed by the crop up to float32 rounding of the sample positions
    (< 0.01 of a grey level)."""
    (h, w), (new_h, new_w) = frames.shape[1:3], size
    r0, r1, rf = _bilinear_taps(h, new_h, top, crop_size)
    c0, c1, cf = _bilinear_taps(w, new_w, left, crop_size)
    y0, y1, x0, x1 = int(r0[0]), int(r1[-1]) + 1, int(c0[0]), int(c1[-1]) + 1
    region = frames[:, y0:y1, x0:x1].permute(0, 3, 1, 2).float()  # T×3×h'×w'
    # grid_sample (align_corners=False) reads pixel p at the normalised coordinate (2p + 1)/size − 1
    ys = (2 * (r0 - y0 + rf) + 1) / (y1 - y0) - 1
    xs = (2 * (c0 - x0 + cf) + 1) / (x1 - x0) - 1
    if flip:
        xs = xs.flip(0)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # crop×crop×(x, y)
    return F.grid_sample(region, grid.expand(len(region), -1, -1, -1), mode="bilinear", padding_mode="border",
                         align_corners=False)


def train_transform(frames: torch.Tensor, *, jitter_scales: Sequence[int], crop_size: int, flip: bool,
                    mean: Sequence[float], std: Sequence[float], generator: torch.Generator) -> torch.Tensor:
    """Random short-side scale in ``jitter_scales`` (inclusive), random ``crop_size``² crop, optional random
    horizontal flip (p = 0.5), normalisation. uint8 ``T×H×W×3`` → float ``3×T×crop×crop``.

    Same result as bilinearly resizing whole frames (:func:`short_side_resize`) and cropping, but only the
    crop's pixels are computed, from the source region it reads (see :func:`_resized_crop`)."""
    _check_frames(frames)
    low, high = int(jitter_scales[0]), int(jitter_scales[1])
    scale = int(torch.randint(low, high + 1, (1,), generator=generator))
    h, w = _short_side_size(*frames.shape[1:3], max(scale, crop_size))
    top = int(torch.randint(0, h - crop_size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - crop_size + 1, (1,), generator=generator))
    flipped = flip and bool(torch.rand((), generator=generator) < 0.5)
    x = _resized_crop(frames, (h, w), top, left, crop_size, flipped)
    mean_t = torch.tensor(mean, dtype=x.dtype).view(3, 1, 1) * 255.0
    scale_t = 1.0 / (torch.tensor(std, dtype=x.dtype).view(3, 1, 1) * 255.0)
    return x.sub_(mean_t).mul_(scale_t).transpose(0, 1).contiguous()


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
