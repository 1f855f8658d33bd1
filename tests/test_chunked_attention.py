"""The chunked CPU attention used by the non-local fast path in training equals softmax attention (values and grads)."""
from __future__ import annotations

import torch

from video_nl.models.context import NonLocalBlock
from video_nl.models.context import chunked_attention
from video_nl.models.context.chunked_attention import chunked_softmax_attention


def test_matches_math_attention_across_chunks(monkeypatch):
    monkeypatch.setattr(chunked_attention, "CHUNK_ROWS", 7)  # several chunks, the last one partial
    monkeypatch.setattr(chunked_attention, "MATERIALIZE_ELEMENTS", 0)
    torch.manual_seed(0)
    q, k = torch.randn(2, 30, 8, dtype=torch.float64), torch.randn(2, 12, 8, dtype=torch.float64)
    v = torch.randn(2, 12, 5, dtype=torch.float64)
    for t in (q, k, v):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, c: chunked_softmax_attention(a, b, c, scale=0.3), (q, k, v))
    ref = torch.softmax(q @ k.transpose(1, 2) * 0.3, -1) @ v
    torch.testing.assert_close(chunked_softmax_attention(q, k, v, scale=0.3), ref)


def test_nonlocal_training_gradients_equal_the_explicit_path():
    torch.manual_seed(0)
    fused = NonLocalBlock(dim=16, key_pool=(1, 2, 2)).double()
    torch.nn.init.uniform_(fused.bn.weight, 0.5, 1.5)
    explicit = NonLocalBlock(dim=16, key_pool=(1, 2, 2), fast_path=False).double()
    explicit.load_state_dict(fused.state_dict())
    x = torch.randn(2, 16, 2, 6, 6, dtype=torch.float64)
    grads = []
    for block in (fused, explicit):
        block(x).square().sum().backward()
        grads.append([p.grad for p in block.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
