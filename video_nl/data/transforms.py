"""Spatial transforms on whole clips at once: uint8 ``T×H×W×3`` frames → normalised float ``3×T×H×W``.

Every frame of a clip gets the same scale, crop and flip (one resize over the T frames). Training computes only
the pixels its crop keeps, sampled from the source region they read (one ``grid_sample``); testing
keeps every crop, so it resizes whole frames with ``F.interpolate``.
Randomness comes only from the generator passed in, so a clip is reproducible from its seed.

Two pixel conventions (``DATA.SAMPLING_PROTOCOL``; every resize is bilinear, ``align_corners=False``):

* ``caffe2``: train scale ~ U{min..max} (``torch.randint``), long side ``round(long/short·scale)``, crop offsets
  U{0..H−crop} inclusive; test: short side → ``TEST_CROP_SIZE`` for 1 and 3 crops, centre offset
  ``floor((H−crop)/2)``.
* ``pyslowfast`` (PySlowFast's ``transform.random_short_side_scale_jitter``, ``random_crop``,
  ``horizontal_flip``, ``uniform_crop``, drawn from a ``numpy.random.RandomState`` in its order): train scale
  ``int(round(uniform(min, max)))``, frames whose short side already equals it are not resized, long side
  ``floor(long/short·scale)``, crop offsets ``randint(0, H−crop)`` (exclusive: the last offset is never drawn),
  flip when ``uniform() < 0.5``; test: short side → ``TEST_CROP_SIZE`` with 3 crops, but →
  ``TRAIN_JITTER_SCALES[0]`` with 1 crop, centre offset ``ceil((H−crop)/2)``, crops along the height only when
  the frame is taller than wide.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .sampling import PROTOCOLS


def short_side_resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``T×3×H×W`` float frames so the short side is ``size`` (aspect kept, rounded)."""
    return _resize(frames, _short_side_size(*frames.shape[-2:], size))


def _short_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """``(height, width)`` after scaling the short side of ``h×w`` to ``size`` (aspect kept, rounded)."""
    if h <= w:
        return size, max(round(w * size / h), size)
    return max(round(h * size / w), size), size


def _pyslowfast_short_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """``(height, width)`` after PySlowFast's short-side scaling to ``size``: unchanged when the short side already
    is ``size``, else the long side is ``floor(long/short·size)``."""
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(math.floor((float(h) / w) * size)), size
    return size, int(math.floor((float(w) / h) * size))


def _resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``...×3×H×W`` float frames to ``size`` (no-op when already that size)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=False)


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


@dataclass(frozen=True)
class ResizedCrop:
    """A train crop: frames resized to ``size`` (height, width), the ``crop``² window at (``top``, ``left``),
    then flipped horizontally when ``flip``."""

    size: tuple[int, int]
    top: int
    left: int
    crop: int
    flip: bool


def _crop_and_normalise(frames: torch.Tensor, box: ResizedCrop, mean: Sequence[float],
                        std: Sequence[float]) -> torch.Tensor:
    """uint8 ``T×H×W×3`` → normalised float ``3×T×crop×crop`` of ``box`` (see :func:`_resized_crop`)."""
    x = _resized_crop(frames, box.size, box.top, box.left, box.crop, box.flip)
    mean_t = torch.tensor(mean, dtype=x.dtype).view(3, 1, 1) * 255.0
    scale_t = 1.0 / (torch.tensor(std, dtype=x.dtype).view(3, 1, 1) * 255.0)
    return x.sub_(mean_t).mul_(scale_t).transpose(0, 1).contiguous()


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
    return _crop_and_normalise(frames, ResizedCrop((h, w), top, left, crop_size, flipped), mean, std)


def pyslowfast_train_crop(height: int, width: int, *, jitter_scales: Sequence[int], crop_size: int, flip: bool,
                          rng: np.random.RandomState) -> ResizedCrop:
    """PySlowFast's train/val spatial sampling of a ``height×width`` clip (``utils.spatial_sampling`` with
    ``spatial_idx −1``), drawing from ``rng`` exactly as it draws from ``np.random``: scale
    ``int(round(uniform(min, max)))``, then ``randint(0, H−crop)`` / ``randint(0, W−crop)`` only along sides longer
    than the crop, then ``uniform() < 0.5`` for the flip. A scale below ``crop_size`` (which PySlowFast cannot
    crop) is raised to it."""
    scale = int(round(rng.uniform(jitter_scales[0], jitter_scales[1])))
    h, w = _pyslowfast_short_side_size(height, width, max(scale, crop_size))
    top = left = 0
    if not (h == crop_size and w == crop_size):
        if h > crop_size:
            top = int(rng.randint(0, h - crop_size))
        if w > crop_size:
            left = int(rng.randint(0, w - crop_size))
    flipped = flip and bool(rng.uniform() < 0.5)
    return ResizedCrop((h, w), top, left, crop_size, flipped)


def pyslowfast_train_transform(frames: torch.Tensor, *, jitter_scales: Sequence[int], crop_size: int, flip: bool,
                               mean: Sequence[float], std: Sequence[float],
                               rng: np.random.RandomState) -> torch.Tensor:
    """:func:`train_transform` with PySlowFast's pixel conventions (:func:`pyslowfast_train_crop`)."""
    _check_frames(frames)
    box = pyslowfast_train_crop(*frames.shape[1:3], jitter_scales=jitter_scales, crop_size=crop_size, flip=flip,
                                rng=rng)
    return _crop_and_normalise(frames, box, mean, std)


def clip_transform(frames: torch.Tensor, *, protocol: str, seed: int, jitter_scales: Sequence[int], crop_size: int,
                   flip: bool, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The train/val transform of ``protocol`` with its randomness drawn from ``seed`` (a ``torch.Generator``
    for caffe2, ``numpy.random.RandomState(seed mod 2³²)`` for pyslowfast)."""
    kw = dict(jitter_scales=jitter_scales, crop_size=crop_size, flip=flip, mean=mean, std=std)
    if protocol == "pyslowfast":
        return pyslowfast_train_transform(frames, rng=np.random.RandomState(seed % 2**32), **kw)
    if protocol == "caffe2":
        return train_transform(frames, generator=torch.Generator().manual_seed(seed), **kw)
    raise ValueError(f"unknown sampling protocol {protocol!r}; one of {PROTOCOLS}")


def multi_view_scale(*, protocol: str, num_crops: int, crop_size: int, jitter_scales: Sequence[int]) -> int:
    """Short side of the test frames before cropping: ``crop_size``, except PySlowFast's single-crop test, which
    scales to ``TRAIN_JITTER_SCALES[0]`` and centre-crops ``crop_size``."""
    return int(jitter_scales[0]) if protocol == "pyslowfast" and num_crops == 1 else crop_size


def multi_view_boxes(height: int, width: int, *, scale: int, crop_size: int, num_crops: int,
                     protocol: str) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Resized ``(height, width)`` and the ``(top, left)`` of each test crop: 1 → centre; 3 → first/centre/last
    along the long side (the height only when taller than wide), centred across it (module docstring for the
    rounding of each protocol)."""
    if protocol == "pyslowfast":
        h, w = _pyslowfast_short_side_size(height, width, scale)
        top, left = math.ceil((h - crop_size) / 2), math.ceil((w - crop_size) / 2)
    elif protocol == "caffe2":
        h, w = _short_side_size(height, width, scale)
        top, left = (h - crop_size) // 2, (w - crop_size) // 2
    else:
        raise ValueError(f"unknown sampling protocol {protocol!r}; one of {PROTOCOLS}")
    if min(h, w) < crop_size:
        raise ValueError(f"test crop {crop_size} is larger than the frames scaled to short side {scale} ({h}×{w})")
    if num_crops == 1:
        return (h, w), [(top, left)]
    if h > w:
        return (h, w), [(0, left), (top, left), (h - crop_size, left)]
    return (h, w), [(top, 0), (top, left), (top, w - crop_size)]


def multi_view_transform(frames: torch.Tensor, *, crop_size: int, num_crops: int, mean: Sequence[float],
                         std: Sequence[float], scale: int | None = None, protocol: str = "caffe2") -> torch.Tensor:
    """Short side → ``scale`` (default ``crop_size``), then ``num_crops`` (3 or 1) ``crop_size``² crops along the
    long side (left/centre/right for landscape, top/middle/bottom for portrait; :func:`multi_view_boxes`).
    uint8 ``T×H×W×3`` (or ``K×T×H×W×3`` for K clips at once) → float ``num_crops×3×T×c×c``
    (``K·num_crops×3×T×c×c``, clip-major)."""
    clips = frames if frames.dim() == 5 else frames.unsqueeze(0)
    k, t = clips.shape[:2]
    size, boxes = multi_view_boxes(*clips.shape[2:4], scale=scale or crop_size, crop_size=crop_size,
                                   num_crops=num_crops, protocol=protocol)
    x = _resize(_to_float(clips.reshape(k * t, *clips.shape[2:])), size)
    x = x.reshape(k, t, *x.shape[1:])
    views = [x[..., top:top + crop_size, left:left + crop_size] for top, left in boxes]
    views = torch.stack(views, dim=1).reshape(k * len(views), t, 3, crop_size, crop_size)
    return _normalise(views, mean, std)
