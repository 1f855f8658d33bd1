"""Helpers of the CUDA suite (``tests/cuda``, marker ``cuda``): tolerances relative to the values' scale, the tiny
I3D-NL config, and device-generic checks (non-local fused vs explicit, model forward/backward).

Nothing here needs a GPU: the CPU suite runs the same checks on CPU (``tests/test_cuda_helpers.py``), so a wrong
helper shows up without one. fp32 comparisons run inside :func:`video_nl.bench.common.exact_fp32` (no TF32).
"""
from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from video_nl.config import get_default_config
from video_nl.models.build import build_model
from video_nl.models.context import NonLocalBlock

# Largest |actual - expected| allowed, as a fraction of max |expected| (per tensor). fp32: reduction order only
# (TF32 off); bf16 (8 significant bits, unit round-off 2^-8) and fp16 (11 bits, 2^-11) round q, k, v and the output.
REL_TOL = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}
# A whole tiny network forward + backward (train-mode BN over a batch of 2 amplifies round-off), fp32 CPU vs CUDA.
MODEL_REL_TOL = 1e-3
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def rel_error(actual: torch.Tensor, expected: torch.Tensor, *, scale: float | None = None) -> float:
    """max |actual - expected| / scale (default max |expected|; at least 1e-30), computed in fp64 on the CPU."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if a.shape != e.shape:
        raise AssertionError(f"shapes differ: {tuple(a.shape)} vs {tuple(e.shape)}")
    ref = e.abs().max().item() if scale is None else scale
    return (a - e).abs().max().item() / max(ref, 1e-30)


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, *, rel: float, what: str = "",
                          scale: float | None = None) -> None:
    """Fail unless :func:`rel_error` ≤ ``rel`` (the error is relative to the values' scale, not per element)."""
    err = rel_error(actual, expected, scale=scale)
    assert err <= rel, f"{what}: max error {err:.3g} of the values' scale > {rel:.3g}"


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors flattened (fp64)."""
    a, b = a.detach().double().flatten().cpu(), b.detach().double().flatten().cpu()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))


def nl_pair(*, dim: int, inner: int | None, inst: str = "softmax", mode: str = "spacetime", groups: int = 1,
            pool: tuple[int, int, int] = (1, 2, 2), seed: int = 0) -> tuple[NonLocalBlock, NonLocalBlock]:
    """A fused (fast path) and an explicit non-local block with the same weights and an active branch
    (output BN γ ~ U(0.5, 1.5), β ~ U(-0.1, 0.1), instead of the zero-γ identity init)."""
    torch.manual_seed(seed)
    kwargs = dict(dim=dim, inner_dim=inner, instantiation=inst, key_pool=pool, mode=mode, groups=groups)
    fused = NonLocalBlock(**kwargs, fast_path=True)
    with torch.no_grad():
        fused.bn.weight.uniform_(0.5, 1.5)
        fused.bn.bias.uniform_(-0.1, 0.1)
    explicit = NonLocalBlock(**kwargs, fast_path=False)
    explicit.load_state_dict(fused.state_dict())
    return fused, explicit


# (instantiation, mode, groups, key pool, T×H×W, channels, inner width). Sizes are not multiples of 8; inner
# widths 64 and 32 suit flash, 12 (not a multiple of 8) and 320 (> 256) do not; gaussian attends with the raw
# C-channel input (36: not a multiple of 8). Time mode keeps only the temporal part of the pool.
NL_CASES = {
    "softmax-spacetime-odd": ("softmax", "spacetime", 1, (1, 2, 2), (3, 13, 11), 48, 64),
    "softmax-groups2-inner12": ("softmax", "spacetime", 2, (1, 2, 2), (6, 9, 7), 48, 12),
    "softmax-space": ("softmax", "space", 1, (1, 2, 2), (5, 11, 9), 48, 32),
    "softmax-time-groups2": ("softmax", "time", 2, (2, 2, 2), (6, 5, 7), 48, 32),
    "softmax-nopool-inner320": ("softmax", "spacetime", 1, (1, 1, 1), (3, 10, 9), 48, 320),
    "gaussian-c36": ("gaussian", "spacetime", 1, (1, 2, 2), (3, 10, 9), 36, None),
    "gaussian-space-c64": ("gaussian", "space", 1, (1, 1, 1), (5, 7, 9), 64, None),
    "dot_product-groups2": ("dot_product", "spacetime", 2, (2, 2, 2), (4, 7, 9), 48, 24),
}




def nl_case(name: str) -> tuple[NonLocalBlock, NonLocalBlock, torch.Tensor]:
    """The fused and explicit blocks of ``NL_CASES[name]`` and a batch of 2 inputs, on the CPU."""
    inst, mode, groups, pool, size, dim, inner = NL_CASES[name]
    fused, explicit = nl_pair(dim=dim, inner=inner, inst=inst, mode=mode, groups=groups, pool=pool)
    torch.manual_seed(2)
    return fused, explicit, torch.randn(2, dim, *size)


def autocast_for(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (how training runs bf16/fp16), nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def branch_and_grads(block: nn.Module, x: torch.Tensor, grad: torch.Tensor, dtype: torch.dtype) -> dict:
    """Train-mode forward + backward of ``block`` under ``dtype`` autocast.

    Returns the residual branch ``z - x`` (the identity part is exact in any path, so comparing ``z`` would
    hide branch errors behind the scale of ``x``), the branch's gradient to ``x`` (``dz/dx·grad - grad``) and
    every parameter gradient, all fp32.
    """
    block.train()
    block.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    with autocast_for(x.device, dtype):
        z = block(x)
    z.float().backward(grad)
    out = {"branch": z.detach().float() - x.detach(), "grad_x": x.grad.float() - grad}
    out.update({f"grad.{n}": p.grad.float() for n, p in block.named_parameters() if p.grad is not None})
    return out


def fused_vs_explicit_errors(fused: NonLocalBlock, explicit: NonLocalBlock, x: torch.Tensor,
                             dtype: torch.dtype) -> dict[str, float]:
    """:func:`rel_error` of every output of :func:`branch_and_grads`, fused against explicit (same weights).

    Parameter gradients are judged against the scale of all the block's parameter gradients (the largest): some
    are zero in exact arithmetic (train-mode BN removes the constant that the biases of g and of the output conv
    add, softmax the one φ's bias adds), and their bf16 round-off alone is ~1% of that scale.
    """
    torch.manual_seed(1)
    grad = torch.randn_like(x)
    got, want = branch_and_grads(fused, x, grad, dtype), branch_and_grads(explicit, x, grad, dtype)
    assert got.keys() == want.keys(), (sorted(got), sorted(want))
    top = max(v.abs().max().item() for k, v in want.items() if k.startswith("grad."))
    return {k: rel_error(got[k], want[k], scale=top if k.startswith("grad.") else None) for k in want}


def tiny_i3d_nl_cfg(*, frames: int = 4, crop: int = 32, test_crop: int | None = None, classes: int = 5):
    """I3D R18 at width 4 with non-local blocks in res3 and res4 (active: see :func:`activate_context_blocks`),
    no dropout (a forward is then the same function on every device)."""
    cfg = get_default_config()
    cfg.MODEL.ARCH, cfg.MODEL.NUM_CLASSES, cfg.MODEL.DROPOUT_RATE = "i3d", classes, 0.0
    cfg.RESNET.DEPTH, cfg.RESNET.WIDTH_PER_GROUP = 18, 4
    cfg.CONTEXT.TYPE = "nonlocal"
    cfg.NONLOCAL.LOCATION = [[], [1], [1], []]
    cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE = frames, crop
    cfg.DATA.TEST_CROP_SIZE = test_crop or crop
    cfg.DEVICE = "cpu"
    return cfg


def activate_context_blocks(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm (the zero-γ context-block output BNs included) γ ~ U(0.5, 1.5), β ~ U(-0.1, 0.1):
    at init the non-local branches are the identity and would be compared as zeros."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.2 - 0.1)
    return model


def tiny_i3d_nl(seed: int = 0, **cfg_kwargs) -> nn.Module:
    """:func:`tiny_i3d_nl_cfg`'s model on the CPU with active context blocks."""
    torch.manual_seed(seed)
    return activate_context_blocks(build_model(tiny_i3d_nl_cfg(**cfg_kwargs)), seed)


def forward_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Train-mode logits and every parameter gradient of the cross-entropy, fp32."""
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(x)
    nn.functional.cross_entropy(logits.float(), y).backward()
    return logits.detach().float(), {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}


def model_on(model: nn.Module, device: torch.device | str) -> nn.Module:
    """An independent copy of ``model`` on ``device``."""
    return copy.deepcopy(model).to(device)


def exact_bn_stats(model: nn.Module, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BN layer: the mean and unbiased variance of its inputs over all batches (train-mode forward, fp64)."""
    model = model_on(model, "cpu").double().train()
    seen: dict[nn.Module, list[torch.Tensor]] = {}
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    hooks = [m.register_forward_pre_hook(lambda m, i: seen.setdefault(m, []).append(i[0].detach())) for m in bns]
    with torch.no_grad():
        for x in batches:
            model(x.double())
    for h in hooks:
        h.remove()
    out = []
    for m in bns:
        flat = torch.cat([t.transpose(0, 1).flatten(1) for t in seen[m]], dim=1)
        per_batch = flat.shape[1] // len(batches)
        out.append((flat.mean(1), flat.var(1, unbiased=False) * per_batch / (per_batch - 1)))
    return out
