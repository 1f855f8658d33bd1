"""The CUDA suite's helpers (tests/helpers/cuda.py) on the CPU: its checks can fail, its non-local cases are valid
blocks that pass on the CPU at the CUDA tolerances, and its exact BN statistics equal precise BN."""
from __future__ import annotations

import pytest
import torch
from helpers.cuda import (DTYPES, MODEL_REL_TOL, NL_CASES, REL_TOL, assert_close_to_scale, exact_bn_stats,
                          forward_backward, fused_vs_explicit_errors, model_on, nl_case, rel_error, tiny_i3d_nl)
from torch import nn

from video_nl.bench.common import exact_fp32
from video_nl.engine.precise_bn import update_bn_stats


def test_errors_are_relative_to_the_scale_and_the_check_fails_beyond_it():
    expected = torch.tensor([100.0, -0.001, 3.0])
    assert rel_error(expected + torch.tensor([0.0, 0.05, 0.0]), expected) == pytest.approx(5e-4)
    assert rel_error(expected + 1.0, expected, scale=10.0) == pytest.approx(0.1)
    assert_close_to_scale(expected * (1 + 1e-6), expected, rel=1e-5)
    with pytest.raises(AssertionError, match="max error 0.01 of the values' scale"):
        assert_close_to_scale(expected * 1.01, expected, rel=1e-3, what="x")
    with pytest.raises(AssertionError, match="shapes differ"):
        rel_error(expected, expected[:2])


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])  # CPU autocast: bf16 (fp16 only on CUDA)
@pytest.mark.parametrize("case", list(NL_CASES))
def test_nonlocal_cases_pass_on_the_cpu_at_the_cuda_tolerances(case, dtype):
    fused, explicit, x = nl_case(case)
    errors = fused_vs_explicit_errors(fused, explicit, x, DTYPES[dtype])
    assert {"branch", "grad_x", "grad.conv_out.weight"} <= errors.keys()
    assert max(errors.values()) <= REL_TOL[DTYPES[dtype]], errors


def test_fused_vs_explicit_notices_a_different_block():
    fused, explicit, x = nl_case("softmax-space")
    with torch.no_grad():  # (a scaled g would not do: the train-mode output BN cancels it)
        explicit.conv_theta.weight.add_(0.2 * torch.randn_like(explicit.conv_theta.weight))
    errors = fused_vs_explicit_errors(fused, explicit, x, torch.float32)
    assert errors["branch"] > 1e-2 and errors["grad_x"] > 1e-2 and errors["grad.conv_g.weight"] > 1e-2


def test_model_forward_backward_is_repeatable_and_the_context_blocks_are_active():
    model = tiny_i3d_nl()
    x, y = torch.randn(2, 3, 4, 32, 32), torch.tensor([1, 3])
    logits, grads = forward_backward(model_on(model, "cpu"), x, y)
    again, grads_again = forward_backward(model_on(model, "cpu"), x, y)
    assert rel_error(again, logits) <= MODEL_REL_TOL and grads.keys() == grads_again.keys()
    nl_grads = [g for n, g in grads.items() if ".nl" in n and "conv_theta.weight" in n]
    assert len(nl_grads) == 2 and all(g.abs().max() > 0 for g in nl_grads)  # γ ≠ 0: the attention is trained


def test_exact_bn_stats_equal_precise_bn_on_the_cpu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4), nn.ReLU(), nn.Conv3d(4, 4, 1), nn.BatchNorm3d(4))
    batches = [torch.randn(2, 3, 2, 4, 4) * (i + 1) + i for i in range(3)]
    expected = exact_bn_stats(model, batches)
    assert update_bn_stats(model, iter(batches), num_batches=3) == 3
    for bn, (mean, var) in zip([model[1], model[4]], expected):
        assert_close_to_scale(bn.running_mean, mean, rel=1e-5, scale=var.sqrt().max().item())
        assert_close_to_scale(bn.running_var, var, rel=1e-5)


def test_exact_fp32_switches_tf32_off_and_restores_it():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        with exact_fp32():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
