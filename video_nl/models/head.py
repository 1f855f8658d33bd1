"""The classification head: average pool, dropout, linear; fully-convolutional in eval on larger maps."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ResNetHead(nn.Module):
    """Pool the res5 map and classify it.

    Shapes: ``B×C×T×H×W -> B×K``.

    * Training, or a map no larger than the training window ``pool_size``: global average pool, dropout,
      ``fc`` → logits.
    * Eval with a larger map (fully-convolutional testing, e.g. a 256 crop gives 4×8×8 for a 4×7×7 window):
      average pool with the training window at stride 1, apply ``fc`` at every pooled position, softmax,
      mean over positions and return ``log(mean prob)`` — so ``softmax(output)`` is always the class
      distribution of the view. With ``act="sigmoid"`` (multi-label) each position's per-class sigmoid is
      averaged and the logit of that mean is returned, so ``sigmoid(output)`` is the view's mean class
      probability. With ``act="none"`` the per-position logits are averaged instead.

    Args:
        dim_in: input channels C.
        num_classes: classes K.
        pool_size: training window ``(T, H, W)`` of the res5 map.
        dropout: dropout rate before ``fc`` (train only).
        act: ``softmax``, ``sigmoid`` or ``none`` (how positions are combined in fully-convolutional eval).
    """

    def __init__(self, *, dim_in: int, num_classes: int, pool_size: tuple[int, int, int], dropout: float,
                 act: str = "softmax") -> None:
        super().__init__()
        if act not in ("softmax", "sigmoid", "none"):
            raise ValueError(f"act must be softmax, sigmoid or none, got {act!r}")
        self.pool_size = tuple(pool_size)
        self.act = act
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = tuple(min(p, s) for p, s in zip(self.pool_size, x.shape[2:]))
        if self.training or window == tuple(x.shape[2:]):
            return self.fc(self.dropout(x.mean(dim=(2, 3, 4))))
        pooled = F.avg_pool3d(x, window, stride=1)  # B×C×t×h×w
        logits = F.conv3d(pooled, self.fc.weight[:, :, None, None, None], self.fc.bias).flatten(2)  # B×K×P
        if self.act == "none":
            return logits.mean(dim=2)
        if self.act == "sigmoid":
            # logit(mean_p sigmoid(z_p)) = log Σ_p σ(z_p) − log Σ_p σ(−z_p), stable in log space.
            return torch.logsumexp(F.logsigmoid(logits), dim=2) - torch.logsumexp(F.logsigmoid(-logits), dim=2)
        # log(mean_p softmax(logits_p)) computed stably in log space.
        return torch.logsumexp(logits.log_softmax(dim=1), dim=2) - math.log(logits.shape[2])
