"""``bench nonlocal``: one context block vs PyTorchVideo's ``NonLocal`` layer at three feature-map shapes.

Impls (``ours``): ``fused`` (our NonLocalBlock fast path), ``explicit`` (same block, attention map
materialised), ``gc`` and ``latentgnn`` (the cheaper context blocks, same input). Peer: PyTorchVideo's
``create_nonlocal(..., instantiation="softmax")`` (logits scaled by C'^-0.5, like ours) carrying *our*
weights, so outputs agree (checked to ``ATOL``; the difference is reported as ``max_abs_diff``).
Metrics: ``fwd_time`` (eval, no grad), ``fwd_bwd_time`` (train mode, forward + backward to the input and
weights), ``fwd_bwd_peak_mem`` (peak extra bytes during forward + backward, see ``common.MEMORY_METHODS``).
With ``--device cuda`` the cases take a training batch per GPU (:data:`CUDA_CASES`) and each runs twice: fp32
(the agreement check without TF32), then every side under bf16 autocast (impl ``<impl>_bf16`` against
``pytorchvideo_bf16``; our fast path runs flash attention there). Rows carry ``precision``.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..models.context import GCBlock, LatentGNNBlock, NonLocalBlock
from .common import MEMORY_METHODS, exact_fp32, make_row, peak_memory, resolve_device, time_interleaved, time_rows

ATOL = 1e-4
PEER = "pytorchvideo"


@dataclass(frozen=True)
class Case:
    """One feature-map shape: batch, channels, T×H×W and the key max-pool (kernel = stride)."""

    batch: int
    dim: int
    size: tuple[int, int, int]
    key_pool: tuple[int, int, int]
    repeats: int


# res3/res4 of I3D R50 at 8×224² (T=4 after the temporal pool); long_clip: 16 frames at res3, no key pool.
CASES = {
    "res3": Case(batch=2, dim=512, size=(4, 28, 28), key_pool=(1, 2, 2), repeats=7),
    "res4": Case(batch=2, dim=1024, size=(4, 14, 14), key_pool=(1, 2, 2), repeats=7),
    "long_clip": Case(batch=1, dim=512, size=(16, 28, 28), key_pool=(1, 1, 1), repeats=5),
}
# --device cuda: the same maps at a per-GPU training batch (8 clips; 2 at long_clip), more rounds (milliseconds each).
CUDA_CASES = {
    "res3": Case(batch=8, dim=512, size=(4, 28, 28), key_pool=(1, 2, 2), repeats=20),
    "res4": Case(batch=8, dim=1024, size=(4, 14, 14), key_pool=(1, 2, 2), repeats=20),
    "long_clip": Case(batch=2, dim=512, size=(16, 28, 28), key_pool=(1, 1, 1), repeats=10),
}
# Precisions per device: (row suffix, autocast dtype or None for fp32).
PRECISIONS = {"cpu": (("", None),), "cuda": (("", None), ("_bf16", torch.bfloat16))}
QUICK_CASES = {
    "res3": Case(batch=2, dim=32, size=(2, 8, 8), key_pool=(1, 2, 2), repeats=2),
    "long_clip": Case(batch=1, dim=32, size=(4, 8, 8), key_pool=(1, 1, 1), repeats=2),
}


def peer_nonlocal(ours: NonLocalBlock) -> nn.Module:
    """PyTorchVideo's NonLocal with the same shape and a copy of ``ours``' weights (``bn`` → ``norm``)."""
    from pytorchvideo.layers.nonlocal_net import create_nonlocal

    peer = create_nonlocal(dim_in=ours.dim, dim_inner=ours.inner_dim, pool_size=ours.key_pool,
                           instantiation="softmax")
    state = {("norm." + k[3:] if k.startswith("bn.") else k): v for k, v in ours.state_dict().items()}
    peer.load_state_dict(state)
    return peer


def make_blocks(case: Case, *, device: torch.device, seed: int = 0) -> dict[str, nn.Module]:
    """Our blocks (fused, explicit, gc, latentgnn) and the peer, with a non-identity output BN."""
    torch.manual_seed(seed)
    fused = NonLocalBlock(dim=case.dim, key_pool=case.key_pool, fast_path=True)
    with torch.no_grad():  # γ = 0 at init would make every output equal to the input
        fused.bn.weight.uniform_(0.5, 1.5)
        fused.bn.bias.uniform_(-0.1, 0.1)
    explicit = NonLocalBlock(dim=case.dim, key_pool=case.key_pool, fast_path=False)
    explicit.load_state_dict(fused.state_dict())
    blocks = {"fused": fused, "explicit": explicit, "gc": GCBlock(dim=case.dim),
              "latentgnn": LatentGNNBlock(dim=case.dim), PEER: peer_nonlocal(fused)}
    return {name: block.to(device) for name, block in blocks.items()}


def max_output_difference(ours: nn.Module, peer: nn.Module, x: torch.Tensor) -> float:
    """Largest absolute output difference in eval mode (running BN statistics, no grad), in fp32 without TF32."""
    ours.eval()
    peer.eval()
    with torch.no_grad(), exact_fp32():
        return (ours(x) - peer(x)).abs().max().item()


def _autocast(x: torch.Tensor, dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast(x.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def forward_fn(block: nn.Module, x: torch.Tensor, dtype: torch.dtype | None = None) -> Callable[[], object]:
    """Inference forward (eval mode, no grad), under ``dtype`` autocast when given."""
    def run() -> object:
        block.eval()
        with torch.no_grad(), _autocast(x, dtype):
            return block(x)
    return run


def train_step_fn(block: nn.Module, x: torch.Tensor, grad: torch.Tensor,
                  dtype: torch.dtype | None = None) -> Callable[[], None]:
    """Forward (under ``dtype`` autocast when given) + backward in train mode; gradients are reset (to None)
    first so nothing accumulates."""
    x = x.detach().requires_grad_(True)

    def run() -> None:
        block.train()
        block.zero_grad(set_to_none=True)
        x.grad = None
        with _autocast(x, dtype):
            z = block(x)
        z.float().backward(grad)
    return run


def run_case(name: str, case: Case, *, device: torch.device) -> list[dict[str, Any]]:
    """All rows of one case; raises AssertionError if our NL output differs from the peer's beyond ATOL."""
    blocks = make_blocks(case, device=device)
    x = torch.randn(case.batch, case.dim, *case.size, device=device)
    grad = torch.randn_like(x)
    diffs = {impl: max_output_difference(blocks[impl], blocks[PEER], x) for impl in ("fused", "explicit")}
    for impl, diff in diffs.items():
        assert diff <= ATOL, f"nonlocal {name}: {impl} output differs from PyTorchVideo's by {diff:.2e} > {ATOL}"
    extra = {"shape": [case.batch, case.dim, *case.size], "key_pool": list(case.key_pool), "device": device.type}
    rows: list[dict[str, Any]] = []
    for suffix, dtype in PRECISIONS[device.type]:
        rows += _precision_rows(name, case, blocks, x, grad, suffix=suffix, dtype=dtype, device=device,
                                extra={**extra, "precision": "bf16 autocast" if dtype else "fp32"})
    for row in rows:
        if row["impl"] in diffs:
            row["max_abs_diff"] = diffs[row["impl"]]
    return rows


def _precision_rows(name: str, case: Case, blocks: dict[str, nn.Module], x: torch.Tensor, grad: torch.Tensor, *,
                    suffix: str, dtype: torch.dtype | None, device: torch.device,
                    extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Time and memory rows of every block at one precision (impl and peer names end in ``suffix``)."""
    rows: list[dict[str, Any]] = []
    for metric, make in (("fwd_time", lambda b: forward_fn(b, x, dtype)),
                         ("fwd_bwd_time", lambda b: train_step_fn(b, x, grad, dtype))):
        fns = {impl + suffix: make(block) for impl, block in blocks.items()}
        stats = time_interleaved(fns, device=device, warmup=1, repeats=case.repeats)
        rows += time_rows(bench="nonlocal", case=name, metric=metric, stats=stats, peer=PEER + suffix, **extra)
    peer_mem = peak_memory(train_step_fn(blocks[PEER], x, grad, dtype), device=device)
    for impl, block in blocks.items():
        if impl != PEER:
            mem = peak_memory(train_step_fn(block, x, grad, dtype), device=device)
            rows.append(make_row(bench="nonlocal", case=name, impl=impl + suffix, metric="fwd_bwd_peak_mem",
                                 ours=mem / 2**20, peer=peer_mem / 2**20, peer_impl=PEER + suffix,
                                 method=MEMORY_METHODS[device.type], **extra))
    return rows


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows for every case (``--quick``: tiny shapes; ``--device cuda``: :data:`CUDA_CASES`)."""
    device = resolve_device(args.device)
    cases = QUICK_CASES if args.quick else CUDA_CASES if device.type == "cuda" else CASES
    return [row for name, case in cases.items() for row in run_case(name, case, device=device)]
