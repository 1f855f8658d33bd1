"""The ``video-nl`` command line: parses arguments and dispatches; all work lives in the modules it calls.

Every config-driven command takes ``--cfg FILE`` followed by ``KEY VALUE`` overrides (PySlowFast style).
User errors (bad config, missing files, ...) are printed as one paragraph with exit code 2, no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from .config import load_config
from .errors import UserError

# command -> (module, function, help). Each function takes the parsed argparse.Namespace
# (with ``cfg`` already loaded for commands that have ``--cfg``) and returns an exit code or None.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("video_nl.engine.train", "main", "train a model (torchrun-ready), then run multi-view testing"),
    "test": ("video_nl.engine.evaluate", "main", "multi-view (clips x crops) testing with top-1/top-5"),
    "predict": ("video_nl.engine.predict", "main", "top-5 class names with scores for one video"),
    "extract-features": ("video_nl.engine.extract", "main",
                         "features of a trained model for a list of videos (torchrun-ready, resumable)"),
    "export": ("video_nl.engine.export", "main",
               "export a model to torch.export (.pt2), ONNX or TorchScript, checked against eager"),
    "info": ("video_nl.models.info", "main", "parameters, GFLOPs and context blocks of a config's model"),
    "convert": ("video_nl.models.weights.convert", "main", "convert/inflate weights from other codebases"),
    "make-synthetic": ("video_nl.data.synthetic_cli", "main", "write the built-in synthetic spacetime video dataset"),
    "prepare-kinetics": ("video_nl.data.prepare", "main", "build lists (and optionally re-encode) a Kinetics tree"),
    "check-videos": ("video_nl.data.check", "main", "index every video of lists (true frame counts, exact routing) "
                     "and report unreadable, miscounted, VFR, decord-unsafe and too-short files"),
    "prepare-dataset": ("video_nl.data.prepare_dataset", "main",
                        "lists from an official download: kinetics, ucf101, hmdb51, ssv2 or charades"),
    "visualize": ("video_nl.viz.attention", "main", "visualise spacetime attention of context blocks for a video"),
    "analyze-attention": ("video_nl.viz.analysis", "main", "GCNet query-independence analysis of NL blocks"),
    "bench": ("video_nl.bench.runner", "main", "benchmarks against peers (ratios measured in one run)"),
    "config-keys": ("video_nl.cli", "print_config_keys", "list every config key with its type, default and doc"),
}


def _add_cfg(p: argparse.ArgumentParser, required: bool = True, help_: str = "YAML config file") -> None:
    p.add_argument("--cfg", dest="cfg_file", required=required, metavar="FILE", help=help_)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="video-nl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = {name: sub.add_parser(name, help=help_, description=help_) for name, (_, _, help_) in COMMANDS.items()}

    _add_cfg(p["train"])

    _add_cfg(p["test"])
    p["test"].add_argument("--checkpoint", help="checkpoint to test (default: TEST.CHECKPOINT_FILE_PATH, "
                                                "then the newest in OUTPUT_DIR/checkpoints)")

    _add_cfg(p["predict"], required=False)
    p["predict"].add_argument("--checkpoint", help="weights for the --cfg model")
    p["predict"].add_argument("--model", help="a `video-nl export` artifact (.pt2/.onnx/TorchScript); no --cfg needed")
    p["predict"].add_argument("--video", required=True)
    p["predict"].add_argument("--topk", type=int, default=5)
    p["predict"].add_argument("--json", action="store_true", help="print one JSON object")

    ef = p["extract-features"]
    _add_cfg(ef)
    ef.add_argument("--checkpoint", required=True)
    ef.add_argument("--out", required=True, help="output folder (features_<layer>.npy, index.csv, meta.json)")
    source = ef.add_mutually_exclusive_group(required=True)
    source.add_argument("--list", dest="list_file", metavar="FILE", help="video list (any format; labels optional)")
    source.add_argument("--split", choices=["train", "val", "test"], help="a split of the config's dataset")
    source.add_argument("--video", help="one video file")
    ef.add_argument("--views", default=None, metavar="C,S",
                    help="clips,crops per video (default TEST.NUM_ENSEMBLE_VIEWS,TEST.NUM_SPATIAL_CROPS)")
    ef.add_argument("--per-clip", action="store_true", help="one vector per view (N x V x C) instead of the mean")
    ef.add_argument("--layer", action="append", default=None, metavar="NAME",
                    help="res5 (default: pooled res5, before dropout/fc), logits, probs, or a stage/block name "
                         "(s4, s4.nl5, s3.block1; global average pooled); repeatable")
    ef.add_argument("--dtype", choices=["float16", "float32"], default="float32")
    ef.add_argument("--keep-failed", action="store_true", help="give failed videos a NaN row instead of none")
    ef.add_argument("--shard-size", type=int, default=64, help="videos per resumable shard")

    ex = p["export"]
    _add_cfg(ex)
    ex.add_argument("--checkpoint", default=None, help="weights (default: TEST.CHECKPOINT_FILE_PATH, then the "
                                                       "newest in OUTPUT_DIR/checkpoints, else fresh weights)")
    ex.add_argument("--format", required=True, choices=["exported", "onnx", "torchscript"],
                    help="exported: torch.export program (.pt2); onnx: ONNX opset 23 (needs .[export]); torchscript")
    ex.add_argument("--out", required=True, help="artifact file (.pt2 / .onnx / .ts added when it has no suffix)")
    ex.add_argument("--clip", default=None, metavar="T,H,W", help="input clip (default: the training clip)")
    batch = ex.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="any batch size")
    ex.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=True,
                    help="fold BatchNorm into the preceding convs (default on)")
    ex.add_argument("--opset", type=int, default=23, help="ONNX opset (>= 18; 23 keeps attention one node)")
    ex.add_argument("--json", action="store_true", help="print one JSON object")

    _add_cfg(p["info"])
    p["info"].add_argument("--json", action="store_true", help="print one JSON object")

    _add_cfg(p["convert"])
    p["convert"].add_argument("--from", dest="source", required=True,
                              choices=["torchvision2d", "pytorchvideo", "slowfast", "caffe2", "mmaction2"])
    p["convert"].add_argument("src")
    p["convert"].add_argument("dst")
    p["convert"].add_argument("--allow-partial", action="store_true",
                              help="write the checkpoint even if some model keys are missing from the source")

    ms = p["make-synthetic"]
    ms.add_argument("out")
    ms.add_argument("--classes", type=int, default=None, help="number of classes (default: all defined)")
    ms.add_argument("--train-per-class", type=int, default=None)
    ms.add_argument("--val-per-class", type=int, default=None)
    ms.add_argument("--frames", type=int, default=None, help="frames per video")
    ms.add_argument("--size", type=int, default=None, help="frame height and width in pixels")
    ms.add_argument("--fps", type=int, default=None)
    ms.add_argument("--seed", type=int, default=0)
    ms.add_argument("--workers", type=int, default=None, help="parallel encoder processes")
    ms.add_argument("--multi-label", action="store_true",
                    help="the multi-label set instead: co-occurring events in the frame's quadrants")
    ms.add_argument("--train-videos", type=int, default=None, help="--multi-label: train videos (default 240)")
    ms.add_argument("--val-videos", type=int, default=None, help="--multi-label: val videos (default 60)")
    ms.add_argument("--event-prob", type=float, default=None,
                    help="--multi-label: chance that a quadrant holds an event (default 0.5)")

    pk = p["prepare-kinetics"]
    pk.add_argument("root", help="folder with {train,val}/{class name}/*.mp4")
    pk.add_argument("out", help="output folder for lists (and re-encoded videos with --resize)")
    pk.add_argument("--resize", action="store_true", help="re-encode every video to short side --short-side")
    pk.add_argument("--short-side", type=int, default=256)
    pk.add_argument("--underscores", action="store_true", help="replace spaces in class names by underscores")
    pk.add_argument("--workers", type=int, default=None)
    pk.add_argument("--splits", nargs="+", default=["train", "val"])

    cv = p["check-videos"]
    cv.add_argument("lists", nargs="+", metavar="LIST", help="video lists (any DATA.LIST_FORMAT)")
    _add_cfg(cv, required=False, help_="config whose DATA keys give the clip (NUM_FRAMES, SAMPLING_RATE, TARGET_FPS), "
                                       "the list format, path prefix and FRAME_INDEX_DIR (default: the defaults)")
    cv.add_argument("--workers", type=int, default=None, help="parallel indexing processes (default: one per core)")
    cv.add_argument("--json", action="store_true", help="print one JSON object (per-file records and a summary)")
    cv.add_argument("--index-dir", default=None, help="frame index folder (default: DATA.FRAME_INDEX_DIR, else "
                                                      "frame_index beside each list)")
    cv.add_argument("--timeout", type=float, default=None, help="seconds per video before it counts as unreadable "
                                                                "(default 300)")
    cv.add_argument("--rebuild", action="store_true", help="rebuild every index entry instead of reusing it")
    cv.add_argument("--no-progress", action="store_true", help="no progress bar")
    pd = p["prepare-dataset"]
    pd.add_argument("dataset", choices=["kinetics", "ucf101", "hmdb51", "ssv2", "charades"])
    pd.add_argument("root", help="folder where the official archives were unpacked side by side")
    pd.add_argument("out", help="output folder for {train,val,test}.csv, classnames.json (and videos with --resize)")
    pd.add_argument("--split", type=int, default=1, help="official split of ucf101/hmdb51 (1-3)")
    pd.add_argument("--videos", default=None, help="video folder, when not where the official layout puts it")
    pd.add_argument("--resize", action="store_true", help="re-encode every video to short side --short-side")
    pd.add_argument("--short-side", type=int, default=256)
    pd.add_argument("--workers", type=int, default=None)
    pd.add_argument("--underscores", action="store_true", help="kinetics: spaces in class names -> underscores")
    pd.add_argument("--splits", nargs="+", default=["train", "val"], help="kinetics: split folders")

    vz = p["visualize"]
    _add_cfg(vz)
    vz.add_argument("--checkpoint", default=None, help="weights (default: a freshly initialised model)")
    vz.add_argument("--video", required=True)
    vz.add_argument("--out", default="outputs/attention", help="output folder")
    vz.add_argument("--block", action="append", default=None, help="context block name (s4.nl1 style); repeatable")
    vz.add_argument("--query", action="append", default=None, help="t,y,x in input coordinates; repeatable")
    vz.add_argument("--num-queries", type=int, default=3, help="automatic queries when --query is not given")
    vz.add_argument("--clip-index", type=int, default=None, help="test-view clip index (default: middle clip)")
    vz.add_argument("--start-time", type=float, default=None, help="clip start in seconds (overrides --clip-index)")
    vz.add_argument("--topk", type=int, default=10, help="attended positions listed per query in attention.json")
    vz.add_argument("--format", choices=["gif", "mp4"], default="gif", help="animated overlay format")

    an = p["analyze-attention"]
    _add_cfg(an)
    an.add_argument("--checkpoint", default=None)
    an.add_argument("--num-videos", type=int, default=8)
    an.add_argument("--out", default=None, help="JSON output (default OUTPUT_DIR/attention_analysis.json)")

    bn = p["bench"]
    bn.add_argument("which", choices=["nonlocal", "model", "loader", "test-decode", "scaling", "export", "frame-index", "all"])
    bn.add_argument("--json", action="store_true", help="one JSON object per line and comparison")
    bn.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bn.add_argument("--quick", action="store_true", help="fewer repeats and smaller shapes (smoke run)")
    bn.add_argument("--out", default="outputs/bench", help="folder for plots and the JSON table")
    return parser


def print_config_keys(args: argparse.Namespace) -> None:
    """Print every config key with type, default and doc."""
    from .config import all_keys

    for name, key in all_keys():
        choices = f" one of {list(key.choices)}" if key.choices else ""
        print(f"{name} ({key.type}{choices}) = {key.default!r}\n    {key.doc}")


def _resolve(command: str) -> Callable[[argparse.Namespace], int | None]:
    module, func, _ = COMMANDS[command]
    return getattr(importlib.import_module(module), func)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``video-nl`` and ``python -m video_nl``."""
    parser = _build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if hasattr(args, "cfg_file"):
            stray = [r for r in rest if r.startswith("--")]
            if stray:
                parser.error(f"unrecognized arguments: {' '.join(stray)} (config overrides are KEY VALUE pairs)")
            args.cfg = load_config(args.cfg_file, rest)
        elif rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        code = _resolve(args.command)(args)
    except UserError as e:
        print(f"video-nl {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"video-nl {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
