"""Memory-light softmax attention for CPU training: fused forward, chunked recomputation backward.

PyTorch's CPU SDPA falls back to the math kernel (full L×S map) for strided inputs, and its fused CPU
backward parallelises over batch×heads only (one thread when a non-local block has one sequence), so
on CPU the non-local fast path uses this instead when gradients are needed. Forward runs aten's fused
CPU flash-attention kernel (parallel over query blocks), which also returns the per-query log-sum-exp;
it saves q, k, v, the output and that log-sum-exp. Backward recomputes the probabilities of
``CHUNK_ROWS`` queries at a time (the FlashAttention recurrences with whole-row chunks, so every
product is a large GEMM) in two reused buffers. Extra memory is O(L·E) plus two ``CHUNK_ROWS × S``
buffers: linear in the number of positions. Small maps (``MATERIALIZE_ELEMENTS``) take the plain
materialised path, faster there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Queries per backward chunk: large enough for efficient GEMMs, fixed so that the buffers grow linearly with S.
CHUNK_ROWS = 1024
# Below this many score elements (M·L·S; 2^24 fp32 = 64 MiB) the map is small and plain autograd is faster.
MATERIALIZE_ELEMENTS = 1 << 24


def _flash_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Output M×L×Ev and log-sum-exp M×L×1 of softmax(q kᵀ·scale) v (q M×L×E, k M×S×E, v M×S×Ev).

    The fused kernel wants contiguous M×1×L×W inputs of one width W: the narrower side is zero-padded,
    which changes neither the logits nor the kept output channels.
    """
    width_v, width = v.shape[-1], max(q.shape[-1], v.shape[-1])
    q, k, v = (F.pad(t, (0, width - t.shape[-1])).contiguous()[:, None] for t in (q, k, v))
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, scale=scale)[:2]
    return out[:, 0, :, :width_v], lse[:, 0, :, None]


def _with_column(x: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
    """[x | column]: x M×L×E, column M×L×1 -> contiguous M×L×(E+1)."""
    return torch.cat([x, column], dim=-1)


class _ChunkedSoftmaxAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        out, lse = _flash_forward(q, k, v, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        """dq, dk, dv chunk by chunk: p = exp(q kᵀ·s - lse), ds = p ∘ (dO vᵀ - δ) with δ = rowsum(dO ∘ O)."""
        q, k, v, out, lse = ctx.saved_tensors
        qs = q * ctx.scale
        delta = (grad_out * out).sum(-1, keepdim=True)
        ones = k.new_ones(*k.shape[:2], 1)
        # The row terms ride in the GEMMs as one extra column: [q·s | -lse] [k | 1]ᵀ = q kᵀ·s - lse and
        # [dO | -δ] [v | 1]ᵀ = dO vᵀ - δ, so no pass over the chunk is spent on them.
        q_lse, k_one = _with_column(qs, lse.neg()), _with_column(k, ones).transpose(-1, -2)
        do_delta, v_one = _with_column(grad_out, delta.neg_()), _with_column(v, ones).transpose(-1, -2)
        dq, dk, dv = qs.new_empty(qs.shape), k.new_zeros(k.shape), v.new_zeros(v.shape)
        length = qs.shape[1]
        p_buf = qs.new_empty(qs.shape[0], min(CHUNK_ROWS, length), k.shape[1])
        ds_buf = torch.empty_like(p_buf)
        for s in range(0, length, CHUNK_ROWS):
            e = min(s + CHUNK_ROWS, length)
            p = torch.bmm(q_lse[:, s:e], k_one, out=p_buf[:, :e - s]).exp_()
            dv.baddbmm_(p.transpose(-1, -2), grad_out[:, s:e])
            ds = torch.bmm(do_delta[:, s:e], v_one, out=ds_buf[:, :e - s]).mul_(p)
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
