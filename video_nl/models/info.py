"""``video-nl info``: parameters, GFLOPs and context blocks of a config's model.

GFLOPs are counted by fvcore's ``FlopCountAnalysis`` on one ``1×3×NUM_FRAMES×TRAIN_CROP_SIZE²`` clip in
eval mode, counting one multiply-add as one FLOP (fvcore's convention, as PySlowFast/PyTorchVideo
report). Element-wise ops (ReLU, pooling, softmax, residual sums) are not counted. fvcore has no handle
for ``scaled_dot_product_attention`` (the fast non-local path), so one is added here.
"""
from __future__ import annotations

import argparse
import json
import math
import warnings
from typing import Any

import torch

from ..config import CfgNode
from .build import build_model


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """Multiply-adds of ``scaled_dot_product_attention(q ..×L×E, k ..×S×E, v ..×S×Ev)``.

    ``L·S·E`` for the logits plus ``L·S·Ev`` for the weighted sum, per leading (batch, head) index.
    """
    q, k, v = (x.type().sizes() for x in inputs[:3])
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def count_gflops(model: torch.nn.Module, clip: torch.Tensor) -> float:
    """GFLOPs (multiply-adds) of ``model(clip)`` in eval mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fvcore's import-time torch.jit.script and tracer deprecations
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(model, clip)
            analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            return analysis.total() / 1e9
    finally:
        model.train(was_training)


def model_info(cfg: CfgNode, *, flops: bool = True) -> dict:
    """``dict(params, gflops, input, context_blocks=[{name, type, stage, block, channels}])``.

    ``gflops`` is None when ``flops`` is False (the parameter count alone needs no forward pass).
    """
    model = build_model(cfg)
    crop = cfg.DATA.TRAIN_CROP_SIZE
    shape = [1, 3, cfg.DATA.NUM_FRAMES, crop, crop]
    return {
        "arch": cfg.MODEL.ARCH,
        "depth": cfg.RESNET.DEPTH,
        "params": sum(p.numel() for p in model.parameters()),
        "gflops": count_gflops(model, torch.zeros(shape)) if flops else None,
        "input": shape,
        "context_blocks": [{"name": c.name, "type": c.type, "stage": c.stage, "block": c.index,
                            "channels": c.channels} for c in model.context_blocks()],
    }


def format_info(info: dict) -> str:
    """The human-readable table printed by ``video-nl info``."""
    blocks = info["context_blocks"]
    lines = [f"model       {info['arch']} R{info['depth']}",
             f"params      {info['params']:,} ({info['params'] / 1e6:.2f} M)",
             f"GFLOPs      {info['gflops']:.2f} (input {'x'.join(map(str, info['input']))}, 1 multiply-add = 1 FLOP)",
             f"context     {len(blocks)} block(s)"]
    if blocks:
        lines.append(f"  {'name':<10} {'type':<10} {'stage':>5} {'block':>5} {'channels':>8}")
        lines += [f"  {b['name']:<10} {b['type']:<10} {b['stage']:>5} {b['block']:>5} {b['channels']:>8}"
                  for b in blocks]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    """``video-nl info --cfg FILE [KEY VALUE ...] [--json]``."""
    info = model_info(args.cfg)
    print(json.dumps(info) if args.json else format_info(info))
