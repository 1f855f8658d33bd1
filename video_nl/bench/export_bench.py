"""``bench export``: CPU latency of one I3D-NL5 R50 clip (1×3×8×224²) in eager PyTorch vs its exported artifacts.

The peer is eager inference as ``video-nl test`` runs it (eval, no grad, fp32, BN not folded). Ours: the same
model with BN folded (eager), and the artifacts ``video-nl export`` writes (BN folded, fixed batch 1): the
``torch.export`` program run through ``ExportedProgram.module()``, the ONNX model in onnxruntime (CPU provider,
as many intra-op threads as torch) and the TorchScript module. All run interleaved in one process after a
warm-up, so the ratios are what to read; the absolute times depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..deploy import exporters
from ..deploy.artifact import EXTENSIONS, SAVERS, build_meta, load_artifact, relative_difference
from ..deploy.fold_bn import fold_batchnorm
from ..models.build import build_model
from .common import time_rows, time_interleaved
from .model_bench import FRAMES, ours_config

FULL_CROP = 224  # the deployment size of the 8×8 recipe (model bench uses 112 for its training step)
FORMAT_IMPL = {"exported": "torch_export", "onnx": "onnxruntime", "torchscript": "torchscript"}


def write_artifacts(model: torch.nn.Module, cfg: Any, x: torch.Tensor, folder: Path) -> dict[str, Any]:
    """Export ``model`` (already folded) in every format for ``x``'s shape; the loaded artifacts by impl name."""
    artifacts = {}
    for fmt, impl in FORMAT_IMPL.items():
        path = str(folder / f"model{EXTENSIONS[fmt]}")
        meta = build_meta(cfg, fmt=fmt, model_info={}, class_names=[str(i) for i in range(cfg.MODEL.NUM_CLASSES)],
                          clip=tuple(x.shape[2:]), batch=x.shape[0], fold_bn=True, checkpoint=None,
                          opset=exporters.DEFAULT_OPSET if fmt == "onnx" else None)
        SAVERS[fmt](exporters.export(fmt, model, x, dynamic_batch=False), path, meta)
        artifacts[impl] = load_artifact(path, threads=torch.get_num_threads())
    return artifacts


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per artifact (and eager with BN folded): forward time vs unfolded eager, same clip."""
    frames, crop, width = (4, 64, 8) if args.quick else (FRAMES, FULL_CROP, 64)
    warmup, repeats = (1, 2) if args.quick else (1, 5)
    torch.manual_seed(0)
    cfg = ours_config(frames=frames, crop=crop, width=width)
    model = build_model(cfg).eval()
    folded = fold_batchnorm(model)
    x = torch.randn(1, 3, frames, crop, crop)
    with tempfile.TemporaryDirectory() as folder:
        artifacts = write_artifacts(folded, cfg, x, Path(folder))
        with torch.inference_mode():
            reference = model(x)
            diffs = {"eager_folded_bn": relative_difference(folded(x), reference)}
        diffs.update({impl: relative_difference(a(x), reference) for impl, a in artifacts.items()})

        def eager(m: torch.nn.Module):  # noqa: ANN202 - a timed closure
            def call() -> object:
                with torch.inference_mode():
                    return m(x)
            return call

        fns = {"eager": eager(model), "eager_folded_bn": eager(folded)}
        fns.update({impl: (lambda a=a: a(x)) for impl, a in artifacts.items()})
        stats = time_interleaved(fns, device=torch.device("cpu"), warmup=warmup, repeats=repeats)
    rows = time_rows(bench="export", case=f"i3d_nl5_r50_{frames}x{crop}", metric="fwd_time", stats=stats,
                     peer="eager", input=list(x.shape), device="cpu", threads=torch.get_num_threads())
    for row in rows:
        row["rel_diff_to_eager"] = diffs[row["impl"]]
    return rows
