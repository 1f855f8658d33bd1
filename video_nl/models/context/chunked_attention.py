"""Memory-light softmax attention for CPU training: query chunks forward, recomputation backward.

PyTorch's CPU SDPA falls back to the math kernel (full L×S map) for strided inputs, and its fused CPU
backward parallelises over batch×heads only (one thread when a non-local block has one sequence), so
on CPU the non-local fast path uses this instead when gradients are needed. Forward keeps one chunk of
the score matrix at a time and saves q, k, v, the output and the per-query log-sum-exp; backward
recomputes each chunk's probabilities (the FlashAttention recurrences with whole-row chunks, so every
product is a large GEMM). Extra memory is O(L·E) plus a ``CHUNK_ROWS × S`` buffer: linear in the
number of positions. Small maps (``MATERIALIZE_ELEMENTS``) take the plain materialised path, faster there.
"""
from __future__ import annotations

import torch

# Queries per chunk: large enough for efficient GEMMs, fixed so that the buffer grows linearly with S.
CHUNK_ROWS = 1024
# Below this many score elements (M·L·S; 2^24 fp32 = 64 MiB) the map is small and plain autograd is faster.
MATERIALIZE_ELEMENTS = 1 << 24


class _ChunkedSoftmaxAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        qs, k, v = (q * scale).contiguous(), k.contiguous(), v.contiguous()
        length = qs.shape[1]
        out = qs.new_empty(qs.shape[0], length, v.shape[-1])
        lse = qs.new_empty(qs.shape[0], length, 1)
        kt = k.transpose(-1, -2)
        for s in range(0, length, CHUNK_ROWS):
            e = min(s + CHUNK_ROWS, length)
            scores = torch.bmm(qs[:, s:e], kt)
            row_max = scores.amax(-1, keepdim=True)
            scores.sub_(row_max).exp_()
            total = scores.sum(-1, keepdim=True)
            torch.bmm(scores, v, out=out[:, s:e]).div_(total)
            lse[:, s:e] = row_max + total.log()
        ctx.save_for_backward(qs, k, v, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        qs, k, v, out, lse = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        dq, dk, dv = torch.empty_like(qs), torch.zeros_like(k), torch.zeros_like(v)
        delta = (grad_out * out).sum(-1, keepdim=True)
        kt, vt = k.transpose(-1, -2), v.transpose(-1, -2)
        length, num_keys = qs.shape[1], k.shape[1]
        for s in range(0, length, CHUNK_ROWS):
            e = min(s + CHUNK_ROWS, length)
            # p = exp(q k^T - lse) and ds = p * (dO v^T - delta), the subtractions fused into the GEMMs.
            p = torch.baddbmm(lse[:, s:e].neg().expand(-1, -1, num_keys), qs[:, s:e], kt).exp_()
            dv.baddbmm_(p.transpose(-1, -2), grad_out[:, s:e])
            ds = torch.baddbmm(delta[:, s:e].neg().expand(-1, -1, num_keys), grad_out[:, s:e], vt).mul_(p)
            torch.bmm(ds, k, out=dq[:, s:e])
            dk.baddbmm_(ds.transpose(-1, -2), qs[:, s:e])
        return dq.mul_(ctx.scale), dk, dv, None


def chunked_softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float) -> torch.Tensor:
    """softmax(q kᵀ · scale) v for q M×L×E, k M×S×E, v M×S×Ev (same dtype) -> M×L×Ev.

    Chunked (no M×L×S map kept for backward) unless the map has at most ``MATERIALIZE_ELEMENTS`` elements.
    """
    if q.shape[0] * q.shape[1] * k.shape[1] <= MATERIALIZE_ELEMENTS:
        return torch.softmax((q * scale) @ k.transpose(-1, -2), dim=-1) @ v
    return _ChunkedSoftmaxAttention.apply(q, k, v, scale)
