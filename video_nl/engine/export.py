"""``video-nl export``: write a config's model (with its checkpoint) as a torch.export, ONNX or TorchScript
artifact, then load it back and check it against eager.

Steps: build the model on the CPU in eval mode, load the weights, fold BN into the convs (``--fold-bn``,
default on), export for a ``B×3×T×H×W`` clip (``--clip``, default the training clip; ``--batch N`` or
``--dynamic-batch``), write the file with its metadata (class names, input convention; see
:mod:`video_nl.deploy.artifact`), load it back, run it on a random clip and compare with the unfolded eager
model: a max difference above :data:`MAX_REL_DIFF` of the logits' scale is an error (the file is removed).
The graph is also checked for attention score maps that eager inference does not materialise
(:mod:`video_nl.deploy.graph`); a finding is printed as a warning.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch
from torch import nn

from ..data.lists import class_names
from ..deploy import exporters
from ..deploy.artifact import EXTENSIONS, FORMATS, SAVERS, build_meta, load_artifact, relative_difference
from ..deploy.fold_bn import fold_batchnorm
from ..deploy.graph import ATTENTION_OPS, GraphReport, check_graph
from ..errors import UserError
from . import checkpoint as ckpt

MAX_REL_DIFF = 1e-4
EXAMPLE_BATCH = 2  # torch.export specialises sizes 0 and 1, so a dynamic batch is traced with 2


def parse_clip(text: str | None, cfg: Any) -> tuple[int, int, int]:
    """``T,H,W`` (default: ``DATA.NUM_FRAMES`` × ``DATA.TRAIN_CROP_SIZE``²)."""
    if not text:
        return cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TRAIN_CROP_SIZE
    try:
        t, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--clip takes T,H,W (three integers, e.g. 8,224,224); got {text!r}.") from None
    if min(t, h, w) < 1:
        raise UserError(f"--clip sizes must be positive; got {text!r}.")
    return t, h, w


def default_checkpoint(cfg: Any) -> str | None:
    """``TEST.CHECKPOINT_FILE_PATH``, else the newest in ``OUTPUT_DIR/checkpoints``, else None."""
    if cfg.TEST.CHECKPOINT_FILE_PATH:
        return cfg.TEST.CHECKPOINT_FILE_PATH
    found = ckpt.list_checkpoints(cfg.OUTPUT_DIR)
    return found[-1] if found else None


def model_summary(cfg: Any, model: nn.Module) -> dict:
    """The ``model`` entry of the artifact metadata."""
    return {"arch": cfg.MODEL.ARCH, "depth": cfg.RESNET.DEPTH, "num_classes": cfg.MODEL.NUM_CLASSES,
            "context_type": cfg.CONTEXT.TYPE if model.context_blocks() else "",
            "context_blocks": [c.name for c in model.context_blocks()],
            "params": sum(p.numel() for p in model.parameters())}


def export_model(cfg: Any, *, fmt: str, out: str, checkpoint: str | None, clip: tuple[int, int, int],
                 batch: int | None, fold_bn: bool = True, opset: int = exporters.DEFAULT_OPSET,
                 seed: int = 0) -> dict:
    """Export, write, reload and check; returns the report (``rel_diff``, ``graph``, ...). ``batch`` None =
    dynamic batch. Raises UserError when the reloaded artifact differs from eager by more than MAX_REL_DIFF."""
    from ..models.build import build_model

    if fmt not in FORMATS:
        raise UserError(f"Unknown --format {fmt!r}; one of {', '.join(FORMATS)}.")
    if batch is not None and batch < 1:
        raise UserError(f"--batch must be >= 1; got {batch}.")
    model = build_model(cfg).eval()
    if checkpoint:
        ckpt.load_checkpoint(model, checkpoint)
    deployed = fold_batchnorm(model) if fold_bn else model
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(batch or EXAMPLE_BATCH, 3, *clip, generator=generator)
    check_clip = torch.randn(batch or EXAMPLE_BATCH + 1, 3, *clip, generator=generator)
    meta = build_meta(cfg, fmt=fmt, model_info=model_summary(cfg, model), class_names=class_names(cfg), clip=clip,
                      batch=batch, fold_bn=fold_bn, checkpoint=checkpoint, opset=opset if fmt == "onnx" else None)
    graph = exporters.export(fmt, deployed, example, dynamic_batch=batch is None, opset=opset)
    SAVERS[fmt](graph, out, meta)
    with torch.no_grad():
        reference = model(check_clip)
    diff = relative_difference(load_artifact(out)(check_clip), reference)
    if not diff <= MAX_REL_DIFF:  # also catches NaN
        os.remove(out)
        raise UserError(f"The {fmt} artifact differs from the eager model by {diff:.3g} of the logits' scale on a "
                        f"random {'x'.join(map(str, check_clip.shape))} clip (limit {MAX_REL_DIFF:g}); {out} was "
                        f"removed. Try --no-fold-bn, or another --format, and report the model's config.")
    report = check_graph(fmt, graph, deployed, example)
    return {"format": fmt, "out": out, "bytes": os.path.getsize(out), "checkpoint": checkpoint, "clip": list(clip),
            "batch": batch, "fold_bn": fold_bn, "opset": meta["opset"], "rel_diff": diff,
            "check_clip": list(check_clip.shape), "graph": _graph_dict(report)}


def _graph_dict(report: GraphReport) -> dict:
    return {"attention_ops": report.attention_ops, "expected_attention_ops": report.expected_attention_ops,
            "materialised_score_maps": [list(s) for s in report.materialised], "ok": report.ok}


def format_report(r: dict) -> list[str]:
    """Human-readable lines for :func:`export_model`'s report."""
    batch = "dynamic batch" if r["batch"] is None else f"batch {r['batch']}"
    opset = f" opset {r['opset']}" if r["opset"] else ""
    g = r["graph"]
    op = ATTENTION_OPS[r["format"]][0]
    lines = [f"wrote {r['out']} ({r['format']}{opset}, {batch}, clip {'x'.join(map(str, r['clip']))}, "
             f"BN {'folded' if r['fold_bn'] else 'kept'}, {r['bytes'] / 2 ** 20:.1f} MiB)",
             f"check: reloaded artifact vs eager max difference {r['rel_diff']:.2e} of the logits' scale "
             f"(limit {MAX_REL_DIFF:g}) on a random {'x'.join(map(str, r['check_clip']))} clip",
             f"graph: {g['attention_ops']} fused attention node(s) ({op}) for {g['expected_attention_ops']} "
             f"softmax/gaussian non-local block(s)"]
    if g["materialised_score_maps"]:
        lines.append(f"warning: the graph materialises attention score maps that eager inference keeps inside a "
                     f"fused kernel: shapes {g['materialised_score_maps'][:4]}"
                     + (" (ONNX opsets below 23 have no Attention op; use --opset 23)" if r["opset"] and
                        r["opset"] < 23 else ""))
    return lines


def main(args: argparse.Namespace) -> int:
    """``video-nl export --cfg FILE [--checkpoint PATH] --format F --out FILE [--clip T,H,W] [--batch N |
    --dynamic-batch] [--no-fold-bn] [--opset N] [--json] [KEY VALUE ...]``."""
    cfg = args.cfg
    checkpoint = args.checkpoint or default_checkpoint(cfg)
    if checkpoint is None:
        print("[video_nl] no checkpoint given or found: exporting freshly initialised weights", file=sys.stderr)
    out = args.out
    if not os.path.splitext(out)[1]:
        out += EXTENSIONS[args.format]
    report = export_model(cfg, fmt=args.format, out=out, checkpoint=checkpoint, clip=parse_clip(args.clip, cfg),
                          batch=None if args.dynamic_batch else args.batch, fold_bn=args.fold_bn, opset=args.opset)
    if args.json:
        print(json.dumps(report))
    else:
        for line in format_report(report):
            print(f"[video_nl] {line}")
    return 0
