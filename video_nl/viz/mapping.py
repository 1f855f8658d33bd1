"""Input ↔ feature coordinates of a context block: queries to feature cells, key cells back to frames and pixels.

Coordinates are *indices*: frame ``t`` of the clip shown, pixel row ``y`` and column ``x`` of the crop.
Along each axis a feature cell ``i`` of a block's input map is centred on input index ``offset + i·stride``
(its receptive-field centre). The stride is the backbone's ``feature_strides()``; the offset follows from the
layers that are not "same"-padded (see :func:`feature_offsets`): e.g. C2D's 2×1×1 temporal pool makes cell
``t`` cover frames ``2t, 2t+1`` (offset 0.5), while the padded stride-2 convs keep spatial centres at
``i·stride`` (offset 0). An input index belongs to the nearest cell centre (clamped to the map).

Keys are the block input max-pooled by the block's ``key_pool`` inside each of its temporal ``groups`` (floor,
like ``nn.MaxPool3d``): key cell ``k`` along an axis covers the feature cells of its pooling window, and input
indices whose feature cell falls in no window (dropped by the floor) are attended by no key (index -1).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)  # type: ignore[return-value]


def feature_offsets(model: nn.Module, stage: int) -> tuple[float, float, float]:
    """Input index ``(t, y, x)`` of the receptive-field centre of feature cell 0 at the input of stage ``stage``.

    Walks the layers that can shift centres — ``stem.conv``, ``stem.pool`` and (from res3 on) ``pool2`` —
    adding ``((kernel - 1)/2 - padding) · jump`` per layer; the residual stages' convs are "same"-padded and
    shift nothing.
    """
    layers = [model.stem.conv, model.stem.pool]
    if stage > 2 and isinstance(model.pool2, (nn.MaxPool3d, nn.AvgPool3d)):
        layers.append(model.pool2)
    offset, jump = [0.0, 0.0, 0.0], [1, 1, 1]
    for layer in layers:
        kernel, stride, padding = _triple(layer.kernel_size), _triple(layer.stride), _triple(layer.padding)
        for d in range(3):
            offset[d] += ((kernel[d] - 1) / 2 - padding[d]) * jump[d]
            jump[d] *= stride[d]
    return tuple(offset)  # type: ignore[return-value]


@dataclass(frozen=True)
class AxisMap:
    """One axis of a block's feature map: ``size`` cells, cell ``i`` centred on input index ``offset + i·stride``."""

    size: int
    stride: int
    offset: float

    def to_feature(self, u: float) -> int:
        """Feature cell of input index ``u`` (nearest centre, clamped to ``[0, size)``)."""
        return min(max(math.floor((u - self.offset) / self.stride + 0.5), 0), self.size - 1)

    def centre(self, i: float) -> float:
        """Input index of the centre of (possibly fractional) feature cell ``i``."""
        return self.offset + i * self.stride

    def input_cells(self, length: int) -> torch.Tensor:
        """LongTensor[length]: the feature cell of every input index ``0..length-1``."""
        u = torch.arange(length, dtype=torch.float64)
        return torch.floor((u - self.offset) / self.stride + 0.5).clamp(0, self.size - 1).long()


def key_windows(size: int, pool: int, groups: int = 1) -> list[tuple[int, int]]:
    """Feature-cell range ``[start, stop)`` of every key cell along an axis pooled by ``pool`` in ``groups`` chunks."""
    per_group = size // groups
    keys = per_group // pool
    return [(g * per_group + j * pool, g * per_group + (j + 1) * pool) for g in range(groups) for j in range(keys)]


@dataclass(frozen=True)
class BlockGeometry:
    """Where a context block's feature cells and key cells sit in the input clip.

    Attributes:
        axes: the ``t``, ``y``, ``x`` :class:`AxisMap` of the block's input map.
        key_pool: ``(kt, kh, kw)`` pooling of keys (``(1, 1, 1)`` for maps at feature resolution).
        groups: temporal groups the keys are pooled in.
    """

    axes: tuple[AxisMap, AxisMap, AxisMap]
    key_pool: tuple[int, int, int] = (1, 1, 1)
    groups: int = 1

    @property
    def feature_size(self) -> tuple[int, int, int]:
        return tuple(a.size for a in self.axes)  # type: ignore[return-value]

    def windows(self) -> list[list[tuple[int, int]]]:
        """Per axis, the feature-cell window ``[start, stop)`` of each key cell."""
        return [key_windows(a.size, p, self.groups if d == 0 else 1)
                for d, (a, p) in enumerate(zip(self.axes, self.key_pool))]

    @property
    def key_size(self) -> tuple[int, int, int]:
        return tuple(len(w) for w in self.windows())  # type: ignore[return-value]

    def query_cell(self, t: float, y: float, x: float) -> tuple[int, int, int]:
        """Feature cell ``(ft, fy, fx)`` of input position ``(t, y, x)``."""
        return tuple(a.to_feature(u) for a, u in zip(self.axes, (t, y, x)))  # type: ignore[return-value]

    def flat_index(self, cell: Sequence[int]) -> int:
        """Flat index ``ft·H·W + fy·W + fx`` into the block's query grid."""
        _, h, w = self.feature_size
        return (cell[0] * h + cell[1]) * w + cell[2]

    def cell_centre(self, cell: Sequence[int]) -> tuple[float, float, float]:
        """Input index of the centre of feature cell ``cell``."""
        return tuple(a.centre(i) for a, i in zip(self.axes, cell))  # type: ignore[return-value]

    def key_extent(self, key: Sequence[int], clip_size: Sequence[int]) -> dict:
        """Input centre and index ranges ``[first, last]`` (clipped to the clip) covered by key cell ``key``."""
        out: dict = {}
        for name, axis, windows, k, n in zip(("t", "y", "x"), self.axes, self.windows(), key, clip_size):
            start, stop = windows[k]
            centre = axis.centre((start + stop - 1) / 2)
            first = 0 if start == 0 else math.ceil(axis.centre(start - 0.5))
            last = n - 1 if stop == axis.size else math.ceil(axis.centre(stop - 0.5)) - 1
            out[name] = min(max(math.floor(centre + 0.5), 0), n - 1)
            out[f"{name}_range"] = [max(first, 0), min(last, n - 1)]
        return out

    def input_to_key(self, clip_size: Sequence[int]) -> list[torch.Tensor]:
        """Per axis, LongTensor[clip length]: the key cell covering each input index, or -1 for none."""
        out = []
        for axis, windows, n in zip(self.axes, self.windows(), clip_size):
            lookup = torch.full((axis.size,), -1, dtype=torch.long)
            for k, (start, stop) in enumerate(windows):
                lookup[start:stop] = k
            out.append(lookup[axis.input_cells(n)])
        return out

    def to_input(self, maps: torch.Tensor, clip_size: Sequence[int]) -> torch.Tensor:
        """Key-grid maps ``...×Tk×Hk×Wk`` -> ``...×T×H×W`` on the clip (nearest key cell; 0 where no key)."""
        it, iy, ix = self.input_to_key(clip_size)
        padded = torch.nn.functional.pad(maps, (0, 1, 0, 1, 0, 1))  # index -1 reads the zero padding
        return padded[..., it[:, None, None], iy[None, :, None], ix[None, None, :]]


def block_geometry(model: nn.Module, name: str, stage: int, feature_size: Sequence[int], *,
                   key_pool: Sequence[int] = (1, 1, 1), groups: int = 1) -> BlockGeometry:
    """The :class:`BlockGeometry` of context block ``name`` (in ``stage``) whose input map is ``feature_size``."""
    strides = model.feature_strides()[name]
    offsets = feature_offsets(model, stage)
    axes = tuple(AxisMap(int(n), int(s), float(o)) for n, s, o in zip(feature_size, strides, offsets))
    return BlockGeometry(axes, tuple(int(k) for k in key_pool), int(groups))  # type: ignore[arg-type]
