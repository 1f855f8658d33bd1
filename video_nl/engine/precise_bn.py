"""Precise BN: replace BN running statistics by the true mean/variance over many training batches.

Running averages drift with the weights during training; before an evaluation the statistics are
recomputed with the final weights (``BN.USE_PRECISE_STATS``, ``BN.NUM_BATCHES_PRECISE``): each BN layer's
per-batch mean and E[x²] are averaged over the batches (equal weights, equal batch sizes), and
``var = E[x²] - mean²`` (unbiased by the per-batch element count, as BN's running_var). Under DDP the
per-rank averages are all-reduced.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

from .distributed import world_size


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def update_bn_stats(model: nn.Module, batches: Iterable[torch.Tensor], *, num_batches: int,
                    forward: Callable[[torch.Tensor], object] | None = None) -> int:
    """Recompute the running mean/var of every BN layer of ``model`` over up to ``num_batches`` inputs.

    Returns the number of batches used (0 leaves the statistics untouched).
    """
    layers = _bn_layers(model)
    if not layers or num_batches < 1:
        return 0
    sums: dict[nn.Module, list[torch.Tensor]] = {m: [torch.zeros_like(m.running_mean),
                                                     torch.zeros_like(m.running_var)] for m in layers}
    counts: dict[nn.Module, int] = {}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().float()
        dims = [0] + list(range(2, x.dim()))
        sums[module][0] += x.mean(dim=dims)
        sums[module][1] += (x * x).mean(dim=dims)
        counts[module] = x.numel() // x.shape[1]

    was_training = model.training
    model.train()
    handles = [m.register_forward_pre_hook(hook) for m in layers]
    used = 0
    try:
        # The hooks are Python side effects: run eagerly even when the model is compiled (TRAIN.COMPILE).
        with torch.compiler.set_stance("force_eager"):
            for x in batches:
                (forward or model)(x)
                used += 1
                if used >= num_batches:
                    break
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if used == 0:
        return 0
    n_ranks = world_size()
    for m in layers:
        mean, sq = sums[m][0] / used, sums[m][1] / used
        if n_ranks > 1:
            stacked = torch.stack([mean, sq])
            dist.all_reduce(stacked)
            mean, sq = stacked[0] / n_ranks, stacked[1] / n_ranks
        n = counts.get(m, 2)
        var = (sq - mean * mean).clamp_min(0) * (n / max(n - 1, 1))
        m.running_mean.copy_(mean.to(m.running_mean.dtype))
        m.running_var.copy_(var.to(m.running_var.dtype))
    return used
