"""The ResNet stem (conv1 + BN + ReLU + pool1) and the output-size arithmetic shared by the backbone."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a conv/pool along one dim (floor mode, no dilation)."""
    return (size + 2 * padding - kernel) // stride + 1


class VideoStem(nn.Module):
    """conv1 (``t×7×7``, stride ``(s_t,2,2)``) → BN → ReLU → max-pool1 (``p_t×3×3``, stride ``(p_t,2,2)``).

    Shapes: ``B×3×T×H×W -> B×dim_out×T'×H'×W'`` with ``T' = T / (s_t·p_t)`` and ``H' ≈ H/4``.

    Args:
        dim_out: output channels.
        temporal_kernel: temporal size of conv1 (1 for C2D/slow, 5 for I3D; padded by ``k // 2``).
        temporal_stride: temporal stride of conv1 (1 for 8×8 input, 2 for the paper's 32×2 stem).
        pool_temporal: temporal kernel (= stride) of pool1 (1, or 2 for the paper stem).
        pool_padding: pad pool1 spatially by 1 (PySlowFast/PyTorchVideo); False = Caffe2's unpadded pool.
        norm: ``channels -> nn.Module`` normalisation factory.
    """

    def __init__(self, *, dim_out: int, temporal_kernel: int, temporal_stride: int, pool_temporal: int,
                 pool_padding: bool, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, dim_out, (temporal_kernel, 7, 7), stride=(temporal_stride, 2, 2),
                              padding=(temporal_kernel // 2, 3, 3), bias=False)
        self.bn = norm(dim_out)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d((pool_temporal, 3, 3), stride=(pool_temporal, 2, 2),
                                 padding=(0, 1, 1) if pool_padding else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))

    @property
    def stride(self) -> tuple[int, int, int]:
        """Input→output stride ``(st, sh, sw)`` of the whole stem."""
        return tuple(c * p for c, p in zip(self.conv.stride, self.pool.stride))  # type: ignore[return-value]

    def output_size(self, t: int, h: int, w: int) -> tuple[int, int, int]:
        """Output ``(T', H', W')`` for a ``t×h×w`` input, by the conv/pool size formula."""
        pool_pad = self.pool.padding if isinstance(self.pool.padding, tuple) else (self.pool.padding,) * 3
        sizes = []
        for d, n in enumerate((t, h, w)):
            n = conv_out(n, self.conv.kernel_size[d], self.conv.stride[d], self.conv.padding[d])
            sizes.append(conv_out(n, self.pool.kernel_size[d], self.pool.stride[d], pool_pad[d]))
        return tuple(sizes)  # type: ignore[return-value]
