"""``bench model``: I3D-NL5 R50 training step and inference (8×112² clips, batch 2) vs the same network from PyTorchVideo.

Ours: ``build_model`` (MODEL.ARCH i3d, NONLOCAL.PRESET 5). Peer: PyTorchVideo's ``create_resnet`` with its
``i3d_r50`` settings and its ``NonLocal`` (softmax, C/2 inner, 1×2×2 key pool) inserted after res3 blocks
1, 3 and res4 blocks 1, 3, 5 (each such ResBlock becomes ``Sequential(block, nonlocal)``).
Cases: ``train_step`` (forward, cross-entropy, backward, SGD with momentum/nesterov/weight decay) and
``inference`` (eval, no grad; ours with conv-BN folding). Each row's ``impl`` names both sides' setups
(:class:`Setup`): where bf16 is fast (AVX512-BF16/AMX CPU, bf16 CUDA) the primary row is
``ours_bf16_cl_vs_peer_fp32`` (ours as recommended, TRAIN.MIXED_PRECISION bf16 + TRAIN.CHANNELS_LAST, vs
the peer as its users run it, fp32), followed by the like-for-like ``ours_fp32_vs_peer_fp32`` and
``ours_bf16_cl_vs_peer_bf16_cl``; elsewhere only ``ours_fp32_vs_peer_fp32``. The fp32 train row carries
the achieved GFLOP/s (fvcore count of our model) and its ratio to a measured large-sgemm rate.

``--device cuda`` (:class:`GpuWorkload`): 8×224² clips at a batch sized from a measured probe step to fill
about half the GPU, cuDNN autotuning on for both sides, more rounds; each train-step comparison also gets a
``train_peak_mem_per_clip`` row, and its clips/s row both sides' TFLOP/s as a fraction of a bf16 GEMM measured
in the same run (``fraction_of_bf16_gemm``, ``peer_fraction_of_bf16_gemm``).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CfgNode, get_default_config
from ..deploy.fold_bn import fold_batchnorm
from ..models.build import build_model
from .common import gemm_gflops, make_row, peak_memory, resolve_device, synchronize, time_interleaved
from .train_variants import run_variants

BATCH, FRAMES, CROP, CLASSES = 2, 8, 112, 400
NL_BLOCKS = {3: (1, 3), 4: (1, 3, 5)}  # PyTorchVideo Net.blocks index (res3, res4) -> ResBlock indices


def ours_config(*, frames: int, crop: int, width: int = 64) -> CfgNode:
    """The config of our I3D-NL5 R50 (``width`` < 64 only for smoke runs)."""
    cfg = get_default_config()
    cfg.MODEL.ARCH, cfg.MODEL.NUM_CLASSES, cfg.NONLOCAL.PRESET = "i3d", CLASSES, "5"
    cfg.RESNET.WIDTH_PER_GROUP = width
    cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE = frames, crop
    return cfg


def build_ours(*, frames: int, crop: int, width: int = 64) -> nn.Module:
    """Our I3D-NL5 R50 (``width`` < 64 only for smoke runs)."""
    return build_model(ours_config(frames=frames, crop=crop, width=width))


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


def train_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, bf16: bool) -> Callable[[], None]:
    """One SGD step (the same optimiser settings for both networks); as in ``video-nl train``, only the
    forward runs under autocast and the loss is taken on fp32 logits."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)

    def run() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()
    return run


def inference_fn(model: nn.Module, x: torch.Tensor, *, bf16: bool) -> Callable[[], object]:
    """Eval forward without grad."""
    def run() -> object:
        model.eval()
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            return model(x)
    return run


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


@dataclass(frozen=True)
class Setup:
    """How one network runs: under bf16 autocast or in fp32, on channels_last_3d or contiguous tensors."""

    bf16: bool = False
    channels_last: bool = False

    @property
    def name(self) -> str:
        """``fp32``, ``bf16``, with ``_cl`` for channels_last_3d."""
        return ("bf16" if self.bf16 else "fp32") + ("_cl" if self.channels_last else "")

    def describe(self) -> str:
        """Plain words for the row, e.g. ``bf16 autocast, channels_last_3d``."""
        precision = "bf16 autocast" if self.bf16 else "fp32"
        return precision + (", channels_last_3d" if self.channels_last else ", contiguous")

    def prepare(self, model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
        """A copy of ``model`` and ``x`` in this setup's memory format (the original is left as it is)."""
        if not self.channels_last:
            return copy.deepcopy(model), x
        fmt = torch.channels_last_3d
        return copy.deepcopy(model).to(memory_format=fmt), x.contiguous(memory_format=fmt)


FP32 = Setup()
# Our recommended setup on a bf16-capable device: TRAIN.MIXED_PRECISION bf16 and TRAIN.CHANNELS_LAST True.
RECOMMENDED = Setup(bf16=True, channels_last=True)


def comparisons(device: torch.device) -> list[tuple[Setup, Setup]]:
    """(ours, peer) setups to compare, primary first.

    Where bf16 is fast: ours as recommended vs the peer as PyTorchVideo users run it (fp32), then the
    like-for-like rows fp32 vs fp32 and recommended vs recommended. Elsewhere fp32 vs fp32 only.
    """
    if not bf16_supported(device):
        return [(FP32, FP32)]
    return [(RECOMMENDED, FP32), (FP32, FP32), (RECOMMENDED, RECOMMENDED)]


def impl_name(ours: Setup, peer: Setup) -> str:
    """Row ``impl``: both sides' setups, e.g. ``ours_bf16_cl_vs_peer_fp32``."""
    return f"ours_{ours.name}_vs_peer_{peer.name}"


def case_fns(case: str, ours: nn.Module, peer: nn.Module, x: torch.Tensor, y: torch.Tensor,
             sides: list[tuple[str, Setup]]) -> dict[str, Callable[[], object]]:
    """``train_step`` or ``inference`` (ours conv-BN folded there) per (side, setup), keyed ``side_setup``."""
    fns: dict[str, Callable[[], object]] = {}
    for side, setup in sides:
        model = ours if side == "ours" else peer
        if case == "inference" and side == "ours":
            model = fold_batchnorm(model)
        model, xs = setup.prepare(model, x)
        fns[f"{side}_{setup.name}"] = (train_step_fn(model, xs, y, bf16=setup.bf16) if case == "train_step"
                                       else inference_fn(model, xs, bf16=setup.bf16))
    return fns


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train-step rows then inference rows; each case times all its setups in one interleaved loop."""
    device = resolve_device(args.device)
    gpu = GpuWorkload() if device.type == "cuda" and not args.quick else None
    with cudnn_autotune(gpu is not None):
        return _run(args, device, gpu)


def _run(args: argparse.Namespace, device: torch.device, gpu: GpuWorkload | None) -> list[dict[str, Any]]:
    frames, crop, width = (4, 64, 8) if args.quick else (gpu.frames, gpu.crop, 64) if gpu else (FRAMES, CROP, 64)
    warmup, repeats = (1, 2) if args.quick else (gpu.warmup, gpu.repeats) if gpu else (1, 5)
    torch.manual_seed(0)
    ours = build_ours(frames=frames, crop=crop, width=width).to(device)
    peer = build_peer(frames=frames, crop=crop, width=width).to(device)
    batch = gpu.batch_for(ours, frames=frames, crop=crop, device=device) if gpu else BATCH
    x = torch.randn(batch, 3, frames, crop, crop, device=device)
    y = torch.randint(0, CLASSES, (batch,), device=device)
    extra = {"input": [batch, 3, frames, crop, crop], "device": device.type}
    pairs = comparisons(device)
    sides = list(dict.fromkeys([("ours", o) for o, _ in pairs] + [("peer", p) for _, p in pairs]))
    rows = []
    for case in ("train_step", "inference"):
        fns = case_fns(case, ours, peer, x, y, sides)
        stats = time_interleaved(fns, device=device, warmup=warmup, repeats=repeats)
        for o, p in pairs:
            rows.append(make_row(bench="model", case=case, impl=impl_name(o, p), metric="clips_per_s",
                                 ours=stats[f"ours_{o.name}"].inverted(batch),
                                 peer=stats[f"peer_{p.name}"].inverted(batch),
                                 ours_setup=o.describe(), peer_setup=p.describe(), **extra))
        if gpu and case == "train_step":
            rows += gpu_train_figures(rows, fns, pairs, model=ours, x=x, device=device, extra=extra)
    fp32_train = next(r for r in rows if r["case"] == "train_step" and r["impl"] == impl_name(FP32, FP32))
    fp32_train.update(_utilisation(ours, x, fp32_train, device=device))
    x_memory = torch.randn(BATCH, 3, frames, 2 * crop, 2 * crop, device=device)
    rows += run_variants(cfg=ours_config(frames=frames, crop=crop, width=width), ours=ours, peer=peer, x=x, y=y,
                         x_memory=x_memory, setup=pairs[0][0], peer_step_fn=train_step_fn, step_gflop=fp32_train["gflop_per_step"],
                         warmup=warmup, repeats=repeats, quick=args.quick)
    return rows


# ---------------------------------------------------------------------------------------------- --device cuda
@dataclass(frozen=True)
class GpuWorkload:
    """The GPU train step: ``frames``×``crop``² clips, a batch that fills about ``fill`` of the GPU's memory
    (largest of ``batches`` whose probe-measured training memory fits), ``warmup`` + ``repeats`` rounds."""

    frames: int = 8
    crop: int = 224
    batches: tuple[int, ...] = (32, 16, 8, 4, 2)
    fill: float = 0.5
    warmup: int = 2
    repeats: int = 8

    def batch_for(self, model: nn.Module, *, frames: int, crop: int, device: torch.device) -> int:
        """Probe one fp32 training step of ``model`` at batch 2; scale its peak memory per clip to the card."""
        probe = 2
        x = torch.randn(probe, 3, frames, crop, crop, device=device)
        y = torch.zeros(probe, dtype=torch.long, device=device)
        per_clip = peak_memory(train_step_fn(copy.deepcopy(model), x, y, bf16=False), device=device) / probe
        return self.pick(per_clip_bytes=per_clip, free_bytes=torch.cuda.mem_get_info(device)[0])

    def pick(self, *, per_clip_bytes: float, free_bytes: float) -> int:
        """The largest of ``batches`` whose clips fit in ``fill`` of ``free_bytes`` (else the smallest)."""
        return next((b for b in self.batches if b * per_clip_bytes <= self.fill * free_bytes), self.batches[-1])


@contextlib.contextmanager
def cudnn_autotune(enabled: bool) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` on inside the block when ``enabled`` (each side's users' best setup)."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = saved or enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


GEMM_N = 8192  # bf16 GEMM size of the in-run reference rate (1.1 TFLOP per product)


def bf16_gemm_tflops(*, device: torch.device, n: int = GEMM_N, repeats: int = 10) -> float:
    """This GPU's bf16 matrix-multiply rate: ``repeats`` n×n×n products in one timed span after 3 warm-ups."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def gpu_train_figures(rows: list[dict[str, Any]], fns: dict[str, Callable[[], object]],
                      pairs: list[tuple[Setup, Setup]], *, model: nn.Module, x: torch.Tensor, device: torch.device,
                      extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Per train-step comparison: both sides' TFLOP/s (3 × fvcore forward count of ``model`` per step) as a fraction
    of an in-run bf16 GEMM, added to its clips/s row, and a ``train_peak_mem_per_clip`` row (peak memory of one
    step ÷ batch, MiB)."""
    batch, step_gflop, gemm = x.shape[0], 3 * forward_gflop(model, x), bf16_gemm_tflops(device=device, n=GEMM_N)
    mem = {name: peak_memory(fn, device=device) / batch / 2**20 for name, fn in fns.items()}
    out = []
    for o, p in pairs:
        row = next(r for r in rows if r["case"] == "train_step" and r["impl"] == impl_name(o, p))
        ours_tflops, peer_tflops = (step_gflop * row[side] / batch / 1e3 for side in ("ours", "peer"))
        row.update(gflop_per_step=step_gflop, bf16_gemm_tflop_per_s=gemm, ours_tflop_per_s=ours_tflops,
                   peer_tflop_per_s=peer_tflops, fraction_of_bf16_gemm=ours_tflops / gemm,
                   peer_fraction_of_bf16_gemm=peer_tflops / gemm)
        out.append(make_row(bench="model", case="train_step", impl=impl_name(o, p), metric="train_peak_mem_per_clip",
                            ours=mem[f"ours_{o.name}"], peer=mem[f"peer_{p.name}"], ours_setup=o.describe(),
                            peer_setup=p.describe(), method="torch.cuda.max_memory_allocated() over one step",
                            **extra))
    return out


def _utilisation(model: nn.Module, x: torch.Tensor, train_row: dict[str, Any], *,
                 device: torch.device) -> dict[str, float]:
    """Achieved training GFLOP/s (3 × forward flops per step) and its ratio to the measured sgemm rate."""
    step_gflop = 3 * forward_gflop(model, x)
    achieved = step_gflop * train_row["ours"] / x.shape[0]
    peak = gemm_gflops(device=device, dtype=torch.float32, n=8192 if device.type == "cuda" else 2048)
    return {"gflop_per_step": step_gflop, "gflop_per_s": achieved, "sgemm_gflop_per_s": peak,
            "fraction_of_sgemm": achieved / peak}

