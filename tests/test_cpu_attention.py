"""The fused CPU attention used by the non-local fast path in training equals softmax attention (values and grads)."""
from __future__ import annotations

import pytest
import torch
from helpers.numerics import assert_close_to_scale

from video_nl.models.context import NonLocalBlock
from video_nl.models.context import cpu_attention
from video_nl.models.context.cpu_attention import cpu_softmax_attention


@pytest.fixture
def threads():
    """Set the intra-op thread count for one test (it decides the query groups), restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("num_threads,batch", [(1, 2), (3, 1), (4, 1), (5, 2)])  # 1, 3, 4 and 3 query groups
@pytest.mark.parametrize("width,width_v", [(8, 5), (5, 8)])  # either side zero-padded for the fused kernels
def test_matches_math_attention_across_query_groups(monkeypatch, threads, num_threads, batch, width, width_v):
    monkeypatch.setattr(cpu_attention, "MATERIALIZE_ELEMENTS", 0)
    threads(num_threads)
    length = 31  # not divisible by 3 or 4: the last query group is zero-padded
    assert cpu_attention.query_groups(batch, length) == -(-num_threads // batch)
    torch.manual_seed(0)
    q, k = torch.randn(batch, length, width, dtype=torch.float64), torch.randn(batch, 12, width, dtype=torch.float64)
    v = torch.randn(batch, 12, width_v, dtype=torch.float64)
    for t in (q, k, v):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, c: cpu_softmax_attention(a, b, c, scale=0.3), (q, k, v))
    ref = torch.softmax(q @ k.transpose(1, 2) * 0.3, -1) @ v
    torch.testing.assert_close(cpu_softmax_attention(q, k, v, scale=0.3), ref)


def test_strided_fp32_inputs_match_math_attention(monkeypatch):
    """Token views of a conv output (channels last, as the non-local block passes them) in fp32."""
    monkeypatch.setattr(cpu_attention, "MATERIALIZE_ELEMENTS", 0)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 8, 40).transpose(1, 2).requires_grad_(True) for _ in range(3))
    grad = torch.randn(1, 8, 40).transpose(1, 2)
    out = cpu_softmax_attention(q, k, v, scale=0.5)
    ref = torch.softmax(q @ k.transpose(1, 2) * 0.5, -1) @ v
    assert_close_to_scale(out, ref)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    for got, want in zip(grads, torch.autograd.grad(ref, (q, k, v), grad)):
        assert_close_to_scale(got, want)


def test_nonlocal_training_gradients_equal_the_explicit_path(monkeypatch):
    monkeypatch.setattr(cpu_attention, "MATERIALIZE_ELEMENTS", 0)  # the fused kernels even for this small map
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


def test_training_memory_is_far_below_one_attention_map(threads):
    """Forward + backward at L = S = 4096 never holds the 4096² map (64 MiB in fp32), with 1 or 2 groups."""
    from video_nl.bench.common import peak_memory

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4096, 16, requires_grad=True) for _ in range(3))
    grad = torch.randn(1, 4096, 16)
    for num_threads in (1, 2):
        threads(num_threads)
        peak = peak_memory(lambda: cpu_softmax_attention(q, k, v, scale=0.25).backward(grad), device=torch.device("cpu"))
        assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB with {num_threads} threads"
