"""``video-nl extract-features``: features of a trained model for every video of a list.

Input: ``--list FILE`` (any list format the loaders read; labels optional), ``--split train|val|test`` of the
config's dataset, or ``--video PATH``. Each video is decoded once into the multi-view test views
(``TEST.NUM_ENSEMBLE_VIEWS × TEST.NUM_SPATIAL_CROPS``, or ``--views C,S``) exactly as ``video-nl test`` does,
and the model runs on them with the test settings (``TRAIN.MIXED_PRECISION``, ``TRAIN.CHANNELS_LAST``,
``TEST.BATCH_SIZE`` views per forward). Layers (``--layer``, repeatable):

* ``res5`` (default): the globally average-pooled res5 map, before dropout and fc (``model.forward_features``);
* ``logits`` / ``probs``: the model's output and its softmax (per view);
* a module name: ``stem``, a stage (``s2``..``s5``), a residual block (``s4.block2``) or a context block
  (``s4.nl5``): its output map, globally average-pooled over T×H×W.

Views are averaged (``probs``: the mean probability, as the ``sum`` ensemble) unless ``--per-clip``.

Outputs in ``--out DIR``: ``features_<layer>.npy`` (N×C, or N×V×C with ``--per-clip``; ``--dtype``),
``index.csv`` (``row, path, label, views, ok, failure``: one line per list video, in list order; ``row`` is the
video's row in the arrays, empty for a failed video unless ``--keep-failed`` gives it a NaN row) and
``meta.json`` (config, checkpoint, layer shapes, views, failures, video_nl version).

Scale and resume: the list is cut into shards of ``--shard-size`` consecutive videos; under torchrun shard k is
done by rank ``k % world`` (every video on exactly one rank). Each finished shard is written atomically to
``DIR/shards/``; a rerun with the same settings skips finished shards. When all are done rank 0 merges them in
list order, writes the outputs (``meta.json`` last) and removes the shards.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..data.datasets import MultiViewDataset, build_view_loader, read_split
from ..data.lists import ListProblem, VideoEntry, configured_classnames, read_video_list
from ..errors import UserError
from ..utils.io import atomic_json_dump, atomic_write, ensure_writable_dir, write_error
from . import distributed as du
from .logging import Progress
from .metrics import class_scores
from .runtime import autocast, iterate, load_model

DEFAULT_LAYER = "res5"
OUTPUT_LAYERS = ("logits", "probs")
SHARDS = "shards"
#: config keys that change nothing in the features (where outputs go, logging, loader workers, optimiser,
#: views per forward): a resumed run may change them
RUNTIME_KEYS = ("OUTPUT_DIR", "LOG_PERIOD", "LOG_MODEL_INFO", "DIST_BACKEND", "DIST_TIMEOUT_S", "DEVICE",
                "DATA_LOADER", "SOLVER", "TENSORBOARD")

Source = tuple[str, list[VideoEntry], list[ListProblem]]


@dataclass(frozen=True)
class Request:
    """What to extract: layer names, ``clips × crops`` views, per view or averaged, videos per shard."""

    layers: tuple[str, ...]
    clips: int
    crops: int
    per_clip: bool
    shard_size: int

    @property
    def views(self) -> int:
        return self.clips * self.crops


def parse_views(text: str | None, cfg: Any) -> tuple[int, int]:
    """``C,S`` (clips, crops); default the config's test views."""
    if not text:
        return cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS
    try:
        clips, crops = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--views takes C,S (clips per video, crops per clip), e.g. 10,3; got {text!r}.") from None
    if clips < 1 or crops not in (1, 3):
        raise UserError(f"--views C,S needs C >= 1 clips and S = 1 or 3 crops; got {text!r}.")
    return clips, crops


def resolve_source(cfg: Any, *, list_file: str | None, split: str | None, video: str | None) -> Source:
    """The videos to extract: a list file (labels optional), a split of the config's dataset, or one video."""
    if video:
        if not os.path.isfile(video):
            raise UserError(f"Video {video} does not exist.")
        return video, [VideoEntry(video, -1)], []
    if split:
        return read_split(cfg, split)
    data = cfg.DATA
    names = configured_classnames(data, data.PATH_TO_DATA_DIR)
    entries, problems = read_video_list(list_file, fmt=data.LIST_FORMAT, separator=data.PATH_LABEL_SEPARATOR,
                                        prefix=data.PATH_PREFIX, classnames=names, labels_optional=True)
    return list_file, entries, problems


def layer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Hookable feature maps by name: ``stem``, stages ``s2``..``s5`` and their blocks (``s4.block2``, ``s4.nl5``)."""
    out = {"stem": model.stem}
    for stage in ("s2", "s3", "s4", "s5"):
        out[stage] = getattr(model, stage)
        out.update({f"{stage}.{name}": child for name, child in out[stage].named_children()})
    return out


def check_layers(model: nn.Module, layers: Sequence[str]) -> tuple[str, ...]:
    """Validated, de-duplicated layer names (UserError naming the valid ones)."""
    valid = [DEFAULT_LAYER, *OUTPUT_LAYERS, *layer_modules(model)]
    wrong = [name for name in layers if name not in valid]
    if wrong:
        raise UserError(f"Unknown --layer {', '.join(wrong)}; valid: {', '.join(valid)}.")
    return tuple(dict.fromkeys(layers))


class LayerTaps:
    """Runs the model on views and returns the requested layers, each ``V×C`` float32 on the CPU.

    Module outputs are captured by forward hooks and globally average-pooled over T×H×W (``res5`` is the
    pooled output of ``s5``, i.e. ``model.forward_features``). ``probs`` is the softmax of the logits, or
    their per-class sigmoid with ``act="sigmoid"`` (``MODEL.HEAD_ACT``, multi-label models)."""

    def __init__(self, model: nn.Module, layers: Sequence[str], *, act: str = "softmax") -> None:
        self.model, self.layers, self.act = model, tuple(layers), act
        modules = layer_modules(model)
        self.module_of = {name: "s5" if name == DEFAULT_LAYER else name for name in layers if name not in OUTPUT_LAYERS}
        self.captured: dict[str, torch.Tensor] = {}
        self.hooks = [modules[m].register_forward_hook(self._hook(m)) for m in set(self.module_of.values())]

    def _hook(self, name: str):  # noqa: ANN202 - a forward hook
        def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            self.captured[name] = output.float().mean(dim=(2, 3, 4)).cpu()
        return hook

    @torch.no_grad()
    def __call__(self, views: torch.Tensor, *, chunk: int, device: torch.device, precision: Any) -> dict:
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        for start in range(0, len(views), chunk):
            self.captured.clear()
            with precision:
                logits = self.model(views[start:start + chunk].to(device, non_blocking=True)).float().cpu()
            for name in self.layers:
                if name == "logits":
                    parts[name].append(logits)
                elif name == "probs":
                    parts[name].append(class_scores(logits, act=self.act))
                else:
                    parts[name].append(self.captured[self.module_of[name]])
        return {name: torch.cat(p) for name, p in parts.items()}

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


def fingerprint(cfg: Any, checkpoint: str, request: Request, entries: Sequence[VideoEntry]) -> dict:
    """What the shards depend on; a resumed run must match it."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_KEYS}
    settings["TEST"] = {k: v for k, v in settings["TEST"].items() if k != "BATCH_SIZE"}
    stat = os.stat(checkpoint)
    paths = hashlib.sha1("\n".join(f"{e.path}\t{e.label}" for e in entries).encode()).hexdigest()
    return {"checkpoint": os.path.abspath(checkpoint), "checkpoint_bytes": stat.st_size,
            "checkpoint_mtime_ns": stat.st_mtime_ns, "request": asdict(request), "videos": len(entries),
            "list_sha1": paths, "cfg_sha1": hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()}


def shard_path(out: str, k: int) -> str:
    return os.path.join(out, SHARDS, f"shard_{k:06d}.npz")


def prepare_shards(out: str, run: dict) -> str:
    """Create ``out/shards`` with ``run.json``, or check that an existing one holds the same ``run``;
    returns a problem message ("" when fine)."""
    try:
        ensure_writable_dir(out, name="--out")
    except UserError as e:
        return str(e)
    path = os.path.join(out, SHARDS, "run.json")
    run = json.loads(json.dumps(run))  # as it reads back (tuples become lists)
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        if old != run:
            differs = sorted(k for k in set(old) | set(run) if old.get(k) != run.get(k))
            return (f"{os.path.join(out, SHARDS)} holds a partial extraction with other settings (differs in: "
                    f"{', '.join(differs)}). Use another --out, or delete that folder to start over.")
    else:
        atomic_json_dump(run, path)
    return ""


def write_shard(path: str, records: list[dict], layers: Sequence[str]) -> None:
    """One shard's videos: ``index``, ``ok``, ``failure`` and per layer the stacked features of the ok ones."""
    ok = [r for r in records if r["ok"]]
    arrays = {"index": np.array([r["index"] for r in records], dtype=np.int64),
              "ok": np.array([r["ok"] for r in records], dtype=bool),
              "failure": np.array([r["failure"] for r in records], dtype=str)}
    for i, name in enumerate(layers):
        arrays[f"layer{i}"] = np.stack([r["features"][name] for r in ok]) if ok else np.zeros((0,), np.float32)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def extract_shards(cfg: Any, info: du.DistInfo, model: nn.Module, dataset: MultiViewDataset, *,
                   shards: dict[int, range], out: str, request: Request) -> int:
    """Extract ``shards`` (id → video indices), writing each when its last video is done; returns videos done."""
    indices = [i for shard in shards.values() for i in shard]
    if not indices:
        return 0
    loader = build_view_loader(cfg, dataset, indices)
    taps = LayerTaps(model, request.layers, act=cfg.MODEL.HEAD_ACT)
    chunk = max(cfg.TEST.BATCH_SIZE // info.world_size, 1)
    progress = Progress(total=len(indices), start=0, desc="extract", enabled=info.is_main, period=cfg.LOG_PERIOD)
    last_of = {shard[-1]: k for k, shard in shards.items()}
    records: list[dict] = []
    failed, start = 0, time.perf_counter()
    try:
        for n, item in enumerate(iterate(loader), start=1):
            record = {"index": int(item["index"]), "ok": bool(item["ok"]), "failure": item["failure"], "features": {}}
            if item["ok"]:
                feats = taps(item["views"], chunk=chunk, device=info.device, precision=autocast(cfg, info.device))
                record["features"] = {k: (v if request.per_clip else v.mean(dim=0)).numpy() for k, v in feats.items()}
            else:
                failed += 1
                print(f"[video_nl] rank {info.rank}: failed to load {item['path']}: {item['failure']} (skipped)",
                      flush=True)
            records.append(record)
            if record["index"] in last_of:
                write_shard(shard_path(out, last_of[record["index"]]), records, request.layers)
                records = []
            rate = n / max(time.perf_counter() - start, 1e-9)
            progress.update(iteration=n, fields={"videos/s": f"{rate:.2f}", "failed": str(failed)})
    finally:
        progress.close()
        taps.close()
    return len(indices)


def _merge_layer(out: str, name: str, *, index: int, num_shards: int, shape: tuple[int, ...], num_rows: int,
                 dtype: str, keep_failed: bool) -> None:
    """Stream one layer's shards into ``features_<name>.npy`` (a memory-mapped file renamed into place: the
    merged array need not fit in memory); failed videos get NaN rows when ``keep_failed``."""
    path = os.path.join(out, f"features_{name}.npy")
    tmp = os.path.join(out, f".features_{name}.npy.tmp")
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(num_rows, *shape))
        row = 0
        for k in range(num_shards):
            with np.load(shard_path(out, k)) as shard:
                features, ok = shard[f"layer{index}"], shard["ok"]
                for j, position in enumerate(np.cumsum(ok) - 1):
                    if ok[j]:
                        array[row] = features[position]
                    elif keep_failed:
                        array[row] = np.nan
                    else:
                        continue
                    row += 1
        array.flush()
        del array
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise write_error(path, e) from e


def merge_shards(cfg: Any, *, out: str, checkpoint: str, source: Source, request: Request, num_shards: int,
                 dtype: str, keep_failed: bool) -> dict:
    """Rank 0: the output arrays, index.csv and meta.json from all shards, in list order; returns meta."""
    list_path, entries, problems = source
    rows: list[dict] = []
    shapes: dict[str, tuple[int, ...]] = {}
    num_rows = 0
    for k in range(num_shards):
        with np.load(shard_path(out, k)) as shard:
            for i, name in enumerate(request.layers):
                features = shard[f"layer{i}"]
                if features.ndim > 1:
                    shapes.setdefault(name, tuple(features.shape[1:]))
            for index, ok, failure in zip(shard["index"], shard["ok"], shard["failure"]):
                entry = entries[int(index)]
                rows.append({"row": num_rows if ok or keep_failed else "", "path": entry.path,
                             "label": entry.label if entry.label >= 0 else "", "views": request.views if ok else 0,
                             "ok": int(ok), "failure": str(failure)})
                num_rows += bool(ok or keep_failed)
    layers = {}
    for i, name in enumerate(request.layers):
        shape = shapes.get(name, (0,))
        _merge_layer(out, name, index=i, num_shards=num_shards, shape=shape, num_rows=num_rows, dtype=dtype,
                     keep_failed=keep_failed)
        layers[name] = {"file": f"features_{name}.npy", "shape": [num_rows, *shape], "dtype": dtype}
    with atomic_write(os.path.join(out, "index.csv"), "w") as f:
        writer = csv.DictWriter(f, fieldnames=["row", "path", "label", "views", "ok", "failure"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    failed = [{"path": r["path"], "failure": r["failure"]} for r in rows if not r["ok"]]
    meta = {"video_nl_version": __version__, "checkpoint": checkpoint, "source": list_path,
            "layers": layers, "views": {"clips": request.clips, "crops": request.crops, "per_clip": request.per_clip,
                                        "crop_size": cfg.DATA.TEST_CROP_SIZE, "num_frames": cfg.DATA.NUM_FRAMES,
                                        "sampling_rate": cfg.DATA.SAMPLING_RATE},
            "num_videos": len(rows), "num_rows": num_rows, "num_failed": len(failed),
            "keep_failed": keep_failed, "failed": failed, "list_problems": [str(p) for p in problems],
            "precision": cfg.TRAIN.MIXED_PRECISION, "channels_last": cfg.TRAIN.CHANNELS_LAST, "cfg": cfg.to_dict()}
    atomic_json_dump(meta, os.path.join(out, "meta.json"))
    shutil.rmtree(os.path.join(out, SHARDS), ignore_errors=True)
    return meta


def extract_features(cfg: Any, info: du.DistInfo, *, checkpoint: str, source: Source, request: Request, out: str,
                     dtype: str = "float32", keep_failed: bool = False) -> dict | None:
    """Extract ``request`` for the videos of ``source`` into ``out`` (this rank's shards; rank 0 merges).

    Returns meta.json's content on rank 0, None elsewhere."""
    if not os.path.isfile(checkpoint):
        raise UserError(f"Checkpoint {checkpoint} does not exist.")
    if request.shard_size < 1:
        raise UserError(f"--shard-size must be >= 1; got {request.shard_size}.")
    view_cfg = copy.deepcopy(cfg)
    view_cfg.TEST.NUM_ENSEMBLE_VIEWS, view_cfg.TEST.NUM_SPATIAL_CROPS = request.clips, request.crops
    model = load_model(view_cfg, info, checkpoint)
    request = Request(**{**asdict(request), "layers": check_layers(model, request.layers)})
    entries = source[1]
    problem = prepare_shards(out, fingerprint(view_cfg, checkpoint, request, entries)) if info.is_main else ""
    problem = du.broadcast_object(problem)
    if problem:
        raise UserError(problem)
    shards = [range(s, min(s + request.shard_size, len(entries))) for s in range(0, len(entries), request.shard_size)]
    done = {k for k in range(len(shards)) if os.path.isfile(shard_path(out, k))}
    mine = {k: s for k, s in enumerate(shards) if k % info.world_size == info.rank and k not in done}
    if info.is_main:
        views = f"{request.clips} clip(s) x {request.crops} crop(s) " \
                f"{'kept per view' if request.per_clip else 'averaged'}"
        resume = f"; resuming: {len(done)} of {len(shards)} shards already done" if done else ""
        print(f"[video_nl] extracting {', '.join(request.layers)} from {len(entries)} videos ({views}) with "
              f"{info.world_size} rank(s){resume}", flush=True)
    dataset = MultiViewDataset(view_cfg, "test", source=source)
    extract_shards(view_cfg, info, model, dataset, shards=mine, out=out, request=request)
    du.barrier()
    if not info.is_main:
        return None
    meta = merge_shards(view_cfg, out=out, checkpoint=checkpoint, source=source, request=request,
                        num_shards=len(shards), dtype=dtype, keep_failed=keep_failed)
    for failure in meta["failed"]:
        print(f"[video_nl] failed: {failure['path']}: {failure['failure']}", flush=True)
    shapes = ", ".join(f"{name} {'x'.join(map(str, m['shape']))}" for name, m in meta["layers"].items())
    print(f"[video_nl] wrote {shapes} ({meta['num_videos']} videos, {meta['num_failed']} failed) to {out}",
          flush=True)
    return meta


def main(args: argparse.Namespace) -> int:
    """``video-nl extract-features --cfg FILE --checkpoint PATH --out DIR (--list FILE | --split S | --video PATH)
    [--views C,S] [--per-clip] [--layer NAME ...] [--dtype float16|float32] [--keep-failed] [KEY VALUE ...]``."""
    cfg = args.cfg
    clips, crops = parse_views(args.views, cfg)
    request = Request(layers=tuple(args.layer or [DEFAULT_LAYER]), clips=clips, crops=crops,
                      per_clip=args.per_clip, shard_size=args.shard_size)
    info = du.init_distributed(cfg)
    try:
        source = resolve_source(cfg, list_file=args.list_file, split=args.split, video=args.video)
        extract_features(cfg, info, checkpoint=args.checkpoint, source=source, request=request, out=args.out,
                         dtype=args.dtype, keep_failed=args.keep_failed)
        du.barrier()
        return 0
    finally:
        du.cleanup()
