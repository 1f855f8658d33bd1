"""Memory-light softmax attention for CPU training: aten's fused flash-attention forward and backward, with the
queries split across threads.

PyTorch's CPU SDPA falls back to the math kernel (full L×S map) for strided inputs, and its fused CPU
backward parallelises over batch × heads only — one thread when a non-local block has one sequence. Attention
rows are independent given the keys and values, so this module cuts each sequence's queries into ``G``
groups that act as heads sharing the same keys and values (``G`` = enough groups to give every intra-op
thread work): the fused kernels then run on all threads, and the groups' key/value gradients are summed.
Forward saves q, k, v, the output and the per-query log-sum-exp; backward recomputes the probabilities block
by block inside the kernel. Extra memory is O((L + G·S)·E) (the kernel returns key/value gradients per
group) plus the kernels' per-thread block buffers: linear in the number of positions. Small maps
(``MATERIALIZE_ELEMENTS``) take the plain materialised path, faster there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Below this many score elements (M·L·S; 2^22 fp32 = 16 MiB) the map is small and plain autograd is faster
# (res4 of R50 at 8×224² stays there; res3 at 2×3136×784 and anything larger takes the fused kernels).
MATERIALIZE_ELEMENTS = 1 << 22


def query_groups(batch: int, length: int) -> int:
    """Query groups per sequence: enough ``batch × groups`` work items for every intra-op thread."""
    return max(1, min(-(-torch.get_num_threads() // batch), length))


def _as_heads(t: torch.Tensor, groups: int, width: int) -> torch.Tensor:
    """M×L×E (any strides) → contiguous M×G×⌈L/G⌉×width: the rows cut into ``groups`` consecutive groups, the
    last zero-padded to full length and every row zero-padded to ``width`` channels."""
    m, length, e = t.shape
    padded = F.pad(t, (0, width - e, 0, -length % groups))
    return padded.reshape(m, groups, -1, width).contiguous()


def _shared(t: torch.Tensor, groups: int, width: int) -> torch.Tensor:
    """Keys or values M×S×E → M×G×S×width: one contiguous copy, seen by every query group (stride 0 over G)."""
    padded = F.pad(t, (0, width - t.shape[-1])).contiguous()
    return padded[:, None].expand(-1, groups, -1, -1)


class _FusedSoftmaxAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        # The fused kernels want one width W for q, k and v: the narrower side is zero-padded, which changes
        # neither the logits nor the kept output channels. Padded query rows (zero queries, zero output
        # gradient) add nothing to any gradient.
        (m, length, _), width_v = q.shape, v.shape[-1]
        width, groups = max(q.shape[-1], width_v), query_groups(m, length)
        qh, kh, vh = _as_heads(q, groups, width), _shared(k, groups, width), _shared(v, groups, width)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qh, kh, vh, scale=scale)[:2]
        ctx.save_for_backward(qh, kh, vh, out, lse)
        ctx.scale, ctx.shapes = scale, (length, q.shape[-1], k.shape[-1], width_v)
        return out.reshape(m, -1, width)[:, :length, :width_v]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        qh, kh, vh, out, lse = ctx.saved_tensors
        length, width_q, width_k, width_v = ctx.shapes
        m, groups, _, width = qh.shape
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            _as_heads(grad_out, groups, width), qh, kh, vh, out, lse, 0.0, False, scale=ctx.scale)
        dq = dq.reshape(m, -1, width)[:, :length, :width_q]
        return dq, dk.sum(1)[..., :width_k], dv.sum(1)[..., :width_v], None


def cpu_softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float) -> torch.Tensor:
    """softmax(q kᵀ · scale) v for q M×L×E, k M×S×E, v M×S×Ev (same dtype) -> M×L×Ev.

    Fused (no M×L×S map kept for backward) unless the map has at most ``MATERIALIZE_ELEMENTS`` elements.
    """
    if q.shape[0] * q.shape[1] * k.shape[1] <= MATERIALIZE_ELEMENTS:
        return torch.softmax((q * scale) @ k.transpose(-1, -2), dim=-1) @ v
    return _FusedSoftmaxAttention.apply(q, k, v, scale)
