"""Non-local block on CUDA: the fused path (SDPA flash / memory-efficient kernels) equals the explicit path in
fp32, bf16 and fp16 autocast, forward and backward, at odd sizes, with groups and space/time modes, and at
inner widths flash cannot take; eligible shapes really run a fused kernel, whose memory is linear in N."""
from __future__ import annotations

import pytest
import torch
from helpers.cuda import DTYPES, NL_CASES, REL_TOL, autocast_for, fused_vs_explicit_errors, nl_case, nl_pair
from torch.nn.attention import SDPBackend, sdpa_kernel

from video_nl.bench.common import exact_fp32, peak_memory

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")

@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", list(NL_CASES))
def test_fused_equals_explicit_on_cuda(case, dtype):
    fused, explicit, x = nl_case(case)
    with exact_fp32():
        errors = fused_vs_explicit_errors(fused.to(CUDA), explicit.to(CUDA), x.to(CUDA), DTYPES[dtype])
    bad = {k: v for k, v in errors.items() if v > REL_TOL[DTYPES[dtype]]}
    assert not bad, f"{case} {dtype}: errors relative to scale above {REL_TOL[DTYPES[dtype]]}: {bad}"


@pytest.mark.parametrize("inst", ["softmax", "gaussian"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_eligible_shapes_run_a_fused_sdpa_kernel(inst, dtype):
    """Only flash (bf16/fp16) or memory-efficient attention (fp32) allowed: SDPA raises if our token layout
    (contiguous M×1×L×E, equal q/k/v widths) would need the math fallback, which materialises N×N'."""
    backend = SDPBackend.EFFICIENT_ATTENTION if dtype == "fp32" else SDPBackend.FLASH_ATTENTION
    fused, _ = nl_pair(dim=64, inner=32, inst=inst)
    fused = fused.to(CUDA).train()
    x = torch.randn(2, 64, 4, 14, 14, device=CUDA, requires_grad=True)
    with sdpa_kernel([backend]), autocast_for(CUDA, DTYPES[dtype]):
        z = fused(x)
    z.float().square().mean().backward()
    assert torch.isfinite(x.grad).all()


def test_fused_attention_memory_is_linear_in_the_number_of_positions():
    """N = 8·32·32 = 8192 queries and keys: one fp32 attention map is 256 MiB. Measured on the attention alone
    (tokens in, tokens out), so convolution workspaces do not blur it."""
    fused, _ = nl_pair(dim=64, inner=32, pool=(1, 1, 1))
    fused = fused.to(CUDA).train()
    with torch.no_grad():
        q, k, v = fused._tokens(torch.randn(1, 64, 8, 32, 32, device=CUDA), values=True)
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    grad = torch.randn_like(v)
    map_bytes = 8192 * 8192 * 4
    fused_peak = peak_memory(lambda: fused._fast_aggregate(q, k, v).backward(grad), device=CUDA)
    explicit_peak = peak_memory(lambda: (fused._attention(q, k) @ v).backward(grad), device=CUDA)
    assert explicit_peak >= map_bytes, "the explicit attention must hold the map (else this measures nothing)"
    assert fused_peak < map_bytes / 16, f"fused fwd+bwd peak {fused_peak / 2**20:.0f} MiB: the map was materialised"


def test_attention_rows_on_cuda_equal_the_cpu_rows():
    """The visualiser's API on CUDA (index maps, per-sequence rows) against the same block on the CPU."""
    fused, _ = nl_pair(dim=16, inner=8, mode="spacetime", groups=2, pool=(1, 2, 2))
    x = torch.randn(1, 16, 4, 6, 10)
    queries = torch.tensor([0, 7, 59, 60, 239])
    with torch.no_grad():
        cpu_rows = fused.eval().attention_rows(x, queries)
        with exact_fp32():
            cuda_rows = fused.to(CUDA).attention_rows(x.to(CUDA), queries.to(CUDA))
    torch.testing.assert_close(cuda_rows.cpu(), cpu_rows, rtol=0, atol=1e-5)  # probabilities: scale 1
    assert torch.allclose(cuda_rows.sum(dim=(2, 3, 4)).cpu(), torch.ones(1, 5), atol=1e-5)
