"""``video-nl convert --from SOURCE --cfg FILE SRC DST``: other codebases' weights -> a video_nl checkpoint.

The model described by ``--cfg`` is built, the source checkpoint is mapped onto its state dict key by key
(shapes checked, 2D kernels inflated for ``torchvision2d``) and a checkpoint ``{model_state, cfg, meta}`` is
written atomically. Every source key without a place in the model and every model key the source does not
cover is printed and recorded in ``meta``; either refuses the conversion unless ``--allow-partial``
(see :func:`~video_nl.models.weights.common.check_complete`).
"""
from __future__ import annotations

import argparse
import math
import os
import sys

from ... import __version__
from ...config import CfgNode
from ...utils.io import atomic_torch_save
from ..build import build_model
from . import caffe2, mmaction2, pytorchvideo, slowfast, torchvision2d
from .common import CONVENTIONS, ImportReport, SourceFormat, check_complete, import_weights

FORMATS: dict[str, SourceFormat] = {f.name: f for f in (
    torchvision2d.FORMAT, pytorchvideo.FORMAT, slowfast.FORMAT, caffe2.FORMAT, mmaction2.FORMAT)}


def expected_cfg(fmt: SourceFormat) -> dict[str, object]:
    """Config values the converted weights need: the source's normalisation (for trained video models) and
    the format's own requirements."""
    expected: dict[str, object] = {}
    if not fmt.inflate:  # inflated 2D weights are fine-tuned, so the video recipe's normalisation is fine
        convention = CONVENTIONS[fmt.input_convention]
        expected.update({"DATA.MEAN": convention["mean"], "DATA.STD": convention["std"]})
    expected.update(fmt.expected_cfg)
    return expected


def _lookup(cfg: CfgNode, key: str) -> object:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _same(a: object, b: object) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6)  # type: ignore[arg-type]
    return a == b


def cfg_warnings(cfg: CfgNode, fmt: SourceFormat) -> list[str]:
    """One warning per expected config value that ``cfg`` does not have."""
    return [f"the {fmt.name} weights expect {key} {value} but --cfg has {_lookup(cfg, key)}; pass "
            f"`{key} {str(value).replace(' ', '')}` to every command that uses the converted checkpoint."
            for key, value in expected_cfg(fmt).items() if not _same(_lookup(cfg, key), value)]


def build_meta(*, fmt: SourceFormat, cfg: CfgNode, report: ImportReport, src: str, warnings: list[str]) -> dict:
    """The ``meta`` dict of a converted checkpoint."""
    nl_mapped = any(".nl" in key for key in report.mapped.values())
    return {
        "source": fmt.name,
        "source_file": src,
        "input_convention": {"name": fmt.input_convention, **CONVENTIONS[fmt.input_convention]},
        "nl_instantiation": cfg.NONLOCAL.INSTANTIATION if nl_mapped else None,
        "video_nl_version": __version__,
        "expected_cfg": expected_cfg(fmt),
        "unmapped_source_keys": report.unmapped_source_keys,
        "missing_model_keys": report.missing_model_keys,
        "skipped_source_keys": report.skipped_source_keys,
        "left_initialised_keys": report.left_initialised_keys,
        "synthesised_keys": report.synthesised_keys,
        "inflated_keys": report.inflated_keys,
        "notes": list(fmt.notes) + warnings,
    }


def convert(*, source: str, cfg: CfgNode, src: str, dst: str, allow_partial: bool = False) -> dict:
    """Convert ``src`` (a ``source``-format checkpoint) for the model of ``cfg`` and write ``dst``.

    Returns:
        The checkpoint written (``model_state``, ``cfg``, ``meta``).

    Raises:
        WeightImportError: shape mismatch, or an incomplete mapping without ``allow_partial``.
        UserError: unreadable source; UnsafeFileError for files that would run code.
    """
    fmt = FORMATS[source]
    model = build_model(cfg)
    report = import_weights(fmt, fmt.read(src), model.state_dict())
    for line in report.summary_lines():
        print(line)
    warnings = cfg_warnings(cfg, fmt)
    for note in list(fmt.notes) + warnings:
        print(f"note: {note}", file=sys.stderr)
    if not allow_partial:
        check_complete(report, what=os.path.basename(src),
                       hint="Check that --cfg describes the checkpoint's network (RESNET.DEPTH, MODEL.ARCH, "
                            "CONTEXT.TYPE, NONLOCAL.LOCATION), or pass --allow-partial to convert anyway.")
    model.load_state_dict(report.model_state)  # strict: the state is complete by construction
    cfg_dict = cfg.to_dict()
    cfg_dict["MODEL"]["INPUT_CONVENTION"] = fmt.input_convention
    checkpoint = {"model_state": report.model_state, "cfg": cfg_dict,
                  "meta": build_meta(fmt=fmt, cfg=cfg, report=report, src=src, warnings=warnings)}
    atomic_torch_save(checkpoint, dst)
    print(f"wrote {dst} ({fmt.name} weights, input convention {fmt.input_convention})")
    return checkpoint


def main(args: argparse.Namespace) -> int:
    """Entry point of ``video-nl convert``."""
    convert(source=args.source, cfg=args.cfg, src=args.src, dst=args.dst, allow_partial=args.allow_partial)
    return 0
