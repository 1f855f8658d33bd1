"""``bench model``: I3D-NL5 R50 training step and inference (8×112² clips, batch 2) vs the same network from PyTorchVideo.

Ours: ``build_model`` (MODEL.ARCH i3d, NONLOCAL.PRESET 5). Peer: PyTorchVideo's ``create_resnet`` with its
``i3d_r50`` settings and its ``NonLocal`` (softmax, C/2 inner, 1×2×2 key pool) inserted after res3 blocks
1, 3 and res4 blocks 1, 3, 5 (each such ResBlock becomes ``Sequential(block, nonlocal)``).
Cases: ``train_step`` (forward, cross-entropy, backward, SGD with momentum/nesterov/weight decay) and
``inference`` (eval, no grad; ours with conv-BN folding). Impls: ``fp32`` (main rows, both fp32) and
``bf16`` (both under bf16 autocast; only where the device supports it). The fp32 train row carries
the achieved GFLOP/s (fvcore count of our model) and its ratio to a measured large-sgemm rate.
"""
from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import get_default_config
from ..models.build import build_model
from .common import make_row, resolve_device, synchronize, time_interleaved

BATCH, FRAMES, CROP, CLASSES = 2, 8, 112, 400
NL_BLOCKS = {3: (1, 3), 4: (1, 3, 5)}  # PyTorchVideo Net.blocks index (res3, res4) -> ResBlock indices


def build_ours(*, frames: int, crop: int, width: int = 64) -> nn.Module:
    """Our I3D-NL5 R50 (``width`` < 64 only for smoke runs)."""
    cfg = get_default_config()
    cfg.MODEL.ARCH, cfg.MODEL.NUM_CLASSES, cfg.NONLOCAL.PRESET = "i3d", CLASSES, "5"
    cfg.RESNET.WIDTH_PER_GROUP = width
    cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE = frames, crop
    return build_model(cfg)


def build_peer(*, frames: int, crop: int, width: int = 64) -> nn.Module:
    """PyTorchVideo i3d_r50 (``create_resnet`` settings of its hub entry) with five NonLocal layers inserted."""
    from pytorchvideo.layers.nonlocal_net import create_nonlocal
    from pytorchvideo.models.resnet import create_resnet

    res5 = (frames // 2, -(-crop // 32), -(-crop // 32))
    net = create_resnet(model_depth=50, model_num_class=CLASSES, stem_dim_out=width, stem_conv_kernel_size=(5, 7, 7),
                        stage1_pool=nn.MaxPool3d,
                        stage_conv_a_kernel_size=((3, 1, 1), [(3, 1, 1), (1, 1, 1)], [(3, 1, 1), (1, 1, 1)],
                                                  [(1, 1, 1), (3, 1, 1)]),
                        head_pool_kernel_size=res5)
    for stage, indices in NL_BLOCKS.items():
        blocks = net.blocks[stage].res_blocks
        for i in indices:
            dim = blocks[i].branch2.conv_c.out_channels
            blocks[i] = nn.Sequential(blocks[i], create_nonlocal(dim_in=dim, dim_inner=dim // 2, pool_size=(1, 2, 2)))
    return net


def fold_conv_bn(model: nn.Module) -> nn.Module:
    """An eval copy with every BN folded into the conv before it (``bn`` after ``conv``, ``bn_a`` after ``conv_a`` ...)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        for name, child in list(module.named_children()):
            conv_name = "conv" + name[2:]
            conv = getattr(module, conv_name, None)
            if name.startswith("bn") and isinstance(child, nn.BatchNorm3d) and isinstance(conv, nn.Conv3d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, child))
                setattr(module, name, nn.Identity())
    return folded


def train_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, bf16: bool) -> Callable[[], None]:
    """One SGD step (the same optimiser settings for both networks)."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def run() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return run


def inference_fn(model: nn.Module, x: torch.Tensor, *, bf16: bool) -> Callable[[], object]:
    """Eval forward without grad."""
    def run() -> object:
        model.eval()
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            return model(x)
    return run


def sgemm_gflops(*, device: torch.device, n: int = 2048, repeats: int = 3) -> float:
    """This machine's fp32 matrix-multiply rate (best of ``repeats`` n×n×n products), GFLOP/s."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def forward_gflop(model: nn.Module, x: torch.Tensor) -> float:
    """Forward GFLOP of one batch: fvcore's count (one multiply-add = one flop) × 2."""
    from fvcore.nn import FlopCountAnalysis

    model.eval()
    counter = FlopCountAnalysis(model, x[:1])
    counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return 2 * counter.total() * x.shape[0] / 1e9


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast is fast here (CUDA with bf16, or a CPU with AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported()


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train-step and inference rows (fp32, plus bf16 where supported)."""
    device = resolve_device(args.device)
    frames, crop, width = (4, 64, 8) if args.quick else (FRAMES, CROP, 64)
    warmup, repeats = (1, 2) if args.quick else (1, 3)
    torch.manual_seed(0)
    ours = build_ours(frames=frames, crop=crop, width=width).to(device)
    peer = build_peer(frames=frames, crop=crop, width=width).to(device)
    x = torch.randn(BATCH, 3, frames, crop, crop, device=device)
    y = torch.randint(0, CLASSES, (BATCH,), device=device)
    extra = {"input": [BATCH, 3, frames, crop, crop], "device": device.type}
    rows = []
    for impl in ("fp32", "bf16") if bf16_supported(device) else ("fp32",):
        bf16 = impl == "bf16"
        for case, fns in (
            ("train_step", {"ours": train_step_fn(ours, x, y, bf16=bf16), "peer": train_step_fn(peer, x, y, bf16=bf16)}),
            ("inference", {"ours": inference_fn(fold_conv_bn(ours), x, bf16=bf16),
                           "peer": inference_fn(peer, x, bf16=bf16)}),
        ):
            stats = time_interleaved(fns, device=device, warmup=warmup, repeats=repeats)
            clips = {side: s.inverted(BATCH) for side, s in stats.items()}
            rows.append(make_row(bench="model", case=case, impl=impl, metric="clips_per_s", ours=clips["ours"],
                                 peer=clips["peer"], **extra))
    rows[0].update(_utilisation(ours, x, rows[0], device=device))
    return rows


def _utilisation(model: nn.Module, x: torch.Tensor, train_row: dict[str, Any], *,
                 device: torch.device) -> dict[str, float]:
    """Achieved training GFLOP/s (3 × forward flops per step) and its ratio to the measured sgemm rate."""
    step_gflop = 3 * forward_gflop(model, x)
    achieved = step_gflop * train_row["ours"] / x.shape[0]
    peak = sgemm_gflops(device=device)
    return {"gflop_per_step": step_gflop, "gflop_per_s": achieved, "sgemm_gflop_per_s": peak,
            "fraction_of_sgemm": achieved / peak}

