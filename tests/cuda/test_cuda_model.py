"""A tiny I3D-NL on CUDA: equal to the CPU forward and backward, bf16 + channels_last_3d training through the
engine's helpers, precise BN statistics on the GPU, and the fully-convolutional test head at 256 px."""
from __future__ import annotations

import pytest
import torch
from helpers.cuda import (MODEL_REL_TOL, activate_context_blocks, assert_close_to_scale, cosine, exact_bn_stats,
                          forward_backward, model_on, rel_error, tiny_i3d_nl, tiny_i3d_nl_cfg)
from torch import nn

from video_nl.bench.common import exact_fp32
from video_nl.engine import distributed as du
from video_nl.engine.precise_bn import update_bn_stats
from video_nl.engine.runtime import autocast, build_model_for
from video_nl.models.context import NonLocalBlock

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


def _batch(frames: int = 4, size: int = 32, n: int = 2, classes: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, frames, size, size, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def test_tiny_i3d_nl_forward_and_backward_equal_on_cpu_and_cuda():
    model = tiny_i3d_nl()
    x, y = _batch()
    with exact_fp32():
        cpu_logits, cpu_grads = forward_backward(model_on(model, "cpu"), x, y)
        cuda_logits, cuda_grads = forward_backward(model_on(model, CUDA), x.to(CUDA), y.to(CUDA))
    assert_close_to_scale(cuda_logits, cpu_logits, rel=MODEL_REL_TOL, what="train-mode logits")
    assert cuda_grads.keys() == cpu_grads.keys() and any(".nl" in k for k in cpu_grads)
    top = max(g.abs().max().item() for g in cpu_grads.values())
    for name, grad in cpu_grads.items():  # each gradient against its own scale (floored at 1e-3 of the largest)
        assert_close_to_scale(cuda_grads[name], grad, rel=MODEL_REL_TOL, what=name,
                              scale=max(grad.abs().max().item(), 1e-3 * top))
    eval_cpu, eval_cuda = model_on(model, "cpu").eval(), model_on(model, CUDA).eval()
    with torch.no_grad(), exact_fp32():
        assert_close_to_scale(eval_cuda(x.to(CUDA)), eval_cpu(x), rel=MODEL_REL_TOL, what="eval logits")


def test_bf16_channels_last_3d_training_step_through_the_engine_helpers():
    """Forward close to fp32 (a layout mix-up would not be), channels_last_3d kept through the NL blocks and the
    SGD step, every gradient finite. (Whole-network bf16 gradients of a random-init net with train-mode BN on a
    small batch are too noisy to compare element-wise; the classifier's, one layer deep, is compared.)"""
    cfg = tiny_i3d_nl_cfg(frames=8, crop=64)
    cfg.DEVICE, cfg.TRAIN.MIXED_PRECISION, cfg.TRAIN.CHANNELS_LAST = "cuda", "bf16", True
    info = du.DistInfo(rank=0, world_size=1, local_rank=0, device=du.resolve_device(cfg.DEVICE))
    torch.manual_seed(0)
    model = activate_context_blocks(build_model_for(cfg, info, distributed_wrap=False))
    reference = model_on(model, CUDA).to(memory_format=torch.contiguous_format)  # fp32, contiguous
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in model.parameters() if p.dim() == 5)
    formats = []
    for block in (m for m in model.modules() if isinstance(m, NonLocalBlock)):
        block.register_forward_hook(lambda m, i, o: formats.append(o.is_contiguous(memory_format=torch.channels_last_3d)))
    x, y = _batch(frames=8, size=64, n=4)
    x, y = x.to(CUDA).contiguous(memory_format=torch.channels_last_3d), y.to(CUDA)
    with autocast(cfg, CUDA):
        logits = model(x)
    assert logits.dtype == torch.bfloat16 and formats == [True, True]  # the NL blocks keep channels_last_3d
    nn.functional.cross_entropy(logits.float(), y).backward()
    with exact_fp32():
        ref_logits, ref_grads = forward_backward(reference, x.contiguous(), y)
    assert cosine(logits.float(), ref_logits) > 0.99
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert cosine(model.head.fc.weight.grad, ref_grads["head.fc.weight"]) > 0.99
    assert all(p.grad.abs().max() > 0 for n, p in model.named_parameters() if ".nl" in n and n.endswith("weight"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).step()
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in model.parameters() if p.dim() == 5)
    assert not torch.equal(before["head.fc.weight"], model.head.fc.weight)


@pytest.mark.parametrize("precision", ["none", "fp16"])
def test_precise_bn_on_cuda_gives_the_exact_statistics(precision):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
                          nn.Conv3d(8, 8, 1), nn.BatchNorm3d(8))
    batches = [torch.randn(4, 3, 4, 8, 8) * (i + 1) + i for i in range(5)]
    expected = exact_bn_stats(model, batches)
    cfg = tiny_i3d_nl_cfg()
    cfg.TRAIN.MIXED_PRECISION = precision
    gpu = model_on(model, CUDA)
    with exact_fp32(), autocast(cfg, CUDA):
        assert update_bn_stats(gpu, (b.to(CUDA) for b in batches), num_batches=5) == 5
    rel = 1e-4 if precision == "none" else 1e-2
    bns = [m for m in gpu.modules() if isinstance(m, nn.BatchNorm3d)]
    for i, (bn, (mean, var)) in enumerate(zip(bns, expected)):
        assert bn.running_mean.dtype == torch.float32
        assert_close_to_scale(bn.running_mean, mean, rel=rel, what=f"bn{i} mean", scale=var.sqrt().max().item())
        assert_close_to_scale(bn.running_var, var, rel=rel, what=f"bn{i} var")


def test_fully_convolutional_test_head_at_256px_on_cuda():
    """Trained for 8×224² (res5 window 4×7×7), tested on 256 px (res5 4×8×8): the head averages softmaxes."""
    model = tiny_i3d_nl(frames=8, crop=224, test_crop=256).eval()
    x, _ = _batch(frames=8, size=256, n=2)
    with torch.no_grad():
        res5 = []
        model.head.register_forward_pre_hook(lambda m, i: res5.append(tuple(i[0].shape[2:])))  # (None: keep inputs)
        cpu = model(x)
        gpu_model = model_on(model, CUDA)
        with exact_fp32():
            gpu = gpu_model(x.to(CUDA))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            gpu_bf16 = gpu_model(x.to(CUDA))
    assert res5[0] == (4, 8, 8) and model.head.pool_size == (4, 7, 7)
    assert rel_error(gpu, cpu) <= MODEL_REL_TOL
    probs = torch.softmax(gpu.float(), dim=1)
    torch.testing.assert_close(probs.sum(1).cpu(), torch.ones(2), rtol=0, atol=1e-5)
    assert torch.all(gpu <= 0)  # log of a mean of probabilities
    assert (torch.softmax(gpu_bf16.float(), 1) - probs).abs().max() < 0.05
