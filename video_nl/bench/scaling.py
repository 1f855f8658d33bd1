"""``bench scaling``: context-block fwd+bwd time and peak memory as N = T·H·W grows (no key pooling).

Impls ``fused``, ``explicit``, ``latentgnn`` and ``gc`` against PyTorchVideo's NonLocal (our weights) at each
size; rows carry ``n``. A final row per impl (case ``fit``, metric ``mem_exponent``) gives the slope of
log(peak memory) against log(N) over the sizes with N >= ``FIT_FROM`` (1 = linear, 2 = quadratic);
``better_by`` = peer/ours. Below that the fused path materialises its (small) map, as it is faster there.
"""
from __future__ import annotations

import argparse
import math
from typing import Any

import torch

from .common import MEMORY_METHODS, make_row, peak_memory, resolve_device, time_interleaved, time_rows
from .nonlocal_bench import PEER, Case, make_blocks, train_step_fn

DIM = 256
SIZES = [(2, 14, 14), (4, 14, 14), (4, 28, 28), (6, 28, 28), (8, 28, 28), (12, 28, 28)]  # N = 392 ... 9408
FIT_FROM = 4096  # the memory exponent is fitted for N >= FIT_FROM (the fused regime starts at N·N > 2^22, N > 2048)
QUICK_SIZES = [(1, 4, 4), (2, 8, 8), (4, 8, 8)]


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows per size and impl, then the memory-exponent fit rows."""
    device = resolve_device(args.device)
    dim, sizes = (16, QUICK_SIZES) if args.quick else (DIM, SIZES)
    rows: list[dict[str, Any]] = []
    memory: dict[str, list[float]] = {}
    for size in sizes:
        n = math.prod(size)
        case = Case(batch=1, dim=dim, size=size, key_pool=(1, 1, 1), repeats=1 if n > 5000 else 3)
        blocks = make_blocks(case, device=device)
        x = torch.randn(1, dim, *size, device=device)
        grad = torch.randn_like(x)
        fns = {impl: train_step_fn(block, x, grad) for impl, block in blocks.items()}
        extra = {"n": n, "shape": [1, dim, *size], "device": device.type}
        stats = time_interleaved(fns, device=device, warmup=1, repeats=case.repeats)
        rows += time_rows(bench="scaling", case=f"N={n}", metric="fwd_bwd_time", stats=stats, peer=PEER, **extra)
        peak = {impl: peak_memory(fn, device=device) / 2**20 for impl, fn in fns.items()}
        for impl, mib in peak.items():
            memory.setdefault(impl, []).append(mib)
            if impl != PEER:
                rows.append(make_row(bench="scaling", case=f"N={n}", impl=impl, metric="fwd_bwd_peak_mem", ours=mib,
                                     peer=peak[PEER], peer_impl=PEER, method=MEMORY_METHODS[device.type], **extra))
    ns = [math.prod(s) for s in sizes]
    first = min(next((i for i, n in enumerate(ns) if n >= FIT_FROM), len(ns)), len(ns) - 2)  # >= 2 points
    peer_slope = loglog_slope(ns[first:], memory[PEER][first:])
    rows += [make_row(bench="scaling", case="fit", impl=impl, metric="mem_exponent",
                      ours=loglog_slope(ns[first:], mibs[first:]), peer=peer_slope, peer_impl=PEER,
                      n_range=[ns[first], ns[-1]])
             for impl, mibs in memory.items() if impl != PEER]
    return rows
