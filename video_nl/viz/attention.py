"""``video-nl visualize``: where context blocks attend, drawn on the frames of one test view of a video.

For every chosen block the block input is captured with a forward hook and its attention computed per query
through the block's attention API (``attention_rows`` for non-local and LatentGNN, ``attention_map`` for GC and
SNL; SE has no spatial attention). Queries are given in input coordinates (frame, row, column of the clip
shown) and every weight is mapped back to input frames and pixels (:mod:`video_nl.viz.mapping`).

Outputs in ``--out``: ``<block>_q<j>.png`` (montage) and ``<block>_q<j>.gif|mp4`` per query, ``<block>_map.*``
for GC/SNL, ``<block>_latent.png`` for LatentGNN, and ``attention.json`` (queries, top-k attended positions,
top-5 predictions).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..config import CfgNode
from ..errors import UserError
from ..utils.io import atomic_json_dump
from .capture import run_capturing, select_blocks
from .clip import denormalise, load_clip
from .mapping import BlockGeometry, block_geometry
from .render import HeatRow, Marker, animation_frames, montage, write_gif, write_mp4, write_png

LATENT_NODES_SHOWN = 4
INIT_NOTE = ("no --checkpoint: a freshly initialised model. Its context blocks are the identity (their output "
             "branch is zero-initialised) but their attention weights are defined, so the pictures check the "
             "config and the mapping, not anything learnt.")
SE_NOTE = "SE has no spatial attention (it gates channels from a global average); nothing to draw."


@dataclass
class QueryAttention:
    """The attention of one query of one block.

    Attributes:
        query: ``(t, y, x)`` in input coordinates.
        cell: ``(ft, fy, fx)`` feature cell of the block input the query maps to.
        keys: weights over the block's key grid ``Tk×Hk×Wk`` (fp32).
        heat: the same weights on the clip ``T×H×W`` (each input position shows its key cell's weight).
        source: ``user`` or ``auto``.
    """

    query: tuple[int, int, int]
    cell: tuple[int, int, int]
    keys: torch.Tensor
    heat: torch.Tensor
    source: str


def attention_kind(module: nn.Module) -> str:
    """``query`` (per-query rows), ``map`` (one query-independent map) or ``none`` (no spatial attention)."""
    if hasattr(module, "attention_rows"):
        return "query"
    return "map" if hasattr(module, "attention_map") else "none"


def geometry_for(model: nn.Module, block, x: torch.Tensor) -> BlockGeometry:
    """The :class:`BlockGeometry` of ``block`` (a ``ContextBlockInfo``) for its captured input ``x`` (B×C×T×H×W)."""
    module = block.module
    pool = getattr(module, "key_pool", (1, 1, 1)) if attention_kind(module) == "query" else (1, 1, 1)
    return block_geometry(model, block.name, block.stage, x.shape[2:], key_pool=pool,
                          groups=getattr(module, "groups", 1))


def parse_query(text: str, clip_size: Sequence[int]) -> tuple[int, int, int]:
    """``"t,y,x"`` -> ints, checked against the clip ``(T, H, W)``."""
    try:
        t, y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--query {text!r} must be three integers t,y,x (frame in the clip, pixel row, pixel "
                        f"column of the {clip_size[1]}x{clip_size[2]} crop).") from None
    if not all(0 <= v < n for v, n in zip((t, y, x), clip_size)):
        raise UserError(f"--query {text} is outside the clip: frames 0..{clip_size[0] - 1}, rows "
                        f"0..{clip_size[1] - 1}, columns 0..{clip_size[2] - 1} (the centre crop shown).")
    return t, y, x


def auto_queries(x: torch.Tensor, geometry: BlockGeometry, clip_size: Sequence[int],
                 num: int) -> list[tuple[int, int, int]]:
    """``num`` informative queries: the largest feature-norm cell of ``x`` (C×T×H×W) in frames spread evenly
    over the block's feature frames, returned as the input coordinates of the cells' centres."""
    norms = x.float().norm(dim=0)  # T×H×W
    t_len = norms.shape[0]
    chosen: list[tuple[int, int, int]] = []
    for i in range(num):
        ft = (t_len - 1) * i // max(num - 1, 1) if num > 1 else t_len // 2
        frame = norms[ft].clone()
        for c in chosen:
            if c[0] == ft:
                frame[c[1], c[2]] = -1
        fy, fx = divmod(int(frame.argmax()), frame.shape[1])
        chosen.append((ft, fy, fx))
    return [tuple(min(max(math.floor(c + 0.5), 0), n - 1) for c, n in zip(geometry.cell_centre(cell), clip_size))
            for cell in chosen]


def query_attention(module: nn.Module, x: torch.Tensor, geometry: BlockGeometry, clip_size: Sequence[int],
                    queries: Sequence[tuple[int, int, int]], source: str) -> list[QueryAttention]:
    """Attention rows of ``queries`` (input coordinates) for a query-kind block with input ``x`` (1×C×T×H×W)."""
    cells = [geometry.query_cell(*q) for q in queries]
    index = torch.tensor([geometry.flat_index(c) for c in cells], dtype=torch.long, device=x.device)
    with torch.no_grad():
        rows = module.attention_rows(x, index)[0].float().cpu()  # Q×Tk×Hk×Wk
    heat = geometry.to_input(rows, clip_size)
    return [QueryAttention(q, c, rows[i], heat[i], source) for i, (q, c) in enumerate(zip(queries, cells))]


def top_positions(keys: torch.Tensor, geometry: BlockGeometry, clip_size: Sequence[int], k: int) -> list[dict]:
    """The ``k`` largest weights of a key-grid map, each with its input centre and ranges (see ``key_extent``)."""
    flat = keys.flatten()
    values, order = flat.topk(min(k, flat.numel()))
    _, hk, wk = keys.shape
    out = []
    for v, i in zip(values.tolist(), order.tolist()):
        key = (i // (hk * wk), (i // wk) % hk, i % wk)
        out.append({**geometry.key_extent(key, clip_size), "weight": v})
    return out


def query_marker(geometry: BlockGeometry, qa: QueryAttention, clip_size: Sequence[int]) -> Marker:
    """The query position and its feature cell's box in input coordinates."""
    cell = dataclasses.replace(geometry, key_pool=(1, 1, 1), groups=1).key_extent(qa.cell, clip_size)
    return Marker(*qa.query, box=(*cell["t_range"], *cell["y_range"], *cell["x_range"]))


def _describe(q: tuple[int, int, int]) -> str:
    return f"query t={q[0]} y={q[1]} x={q[2]}"


def _write_animation(frames: np.ndarray, heat: np.ndarray, path_stem: str, fmt: str, *, title: str,
                     marker: Marker | None, fps: float) -> str:
    images = animation_frames(frames, heat, title=title, marker=marker)
    path = f"{path_stem}.{fmt}"
    (write_gif if fmt == "gif" else write_mp4)(images, path, fps=fps)
    return path


def visualize_block(model: nn.Module, block, x: torch.Tensor, frames: np.ndarray, *, out: str,
                    queries: Sequence[tuple[int, int, int]] | None, num_queries: int, topk: int,
                    fmt: str, fps: float, progress: tqdm | None = None) -> dict:
    """Draw one block's attention for the clip ``frames`` (uint8 T×H×W×3) given its input ``x`` (1×C×T'×H'×W');
    returns the block's ``attention.json`` entry (file names relative to ``out``)."""
    kind = attention_kind(block.module)
    entry: dict = {"name": block.name, "type": block.type, "kind": kind}
    if kind == "none":
        print(f"{block.name}: {SE_NOTE}")
        return {**entry, "note": SE_NOTE}
    clip_size = frames.shape[:3]
    geometry = geometry_for(model, block, x)
    entry.update(feature_size=list(geometry.feature_size), stride=[a.stride for a in geometry.axes],
                 offset=[a.offset for a in geometry.axes], key_pool=list(geometry.key_pool),
                 groups=geometry.groups, key_grid=list(geometry.key_size))
    stem = os.path.join(out, block.name)
    if kind == "map":
        with torch.no_grad():
            keys = block.module.attention_map(x)[0].float().cpu()
        heat = geometry.to_input(keys, clip_size).numpy()
        title = f"{block.name} ({block.type}): query-independent attention map"
        write_png(montage(frames, [HeatRow("attention (all queries)", heat, 1 / keys.numel())], title=title),
                  f"{stem}_map.png")
        anim = _write_animation(frames, heat, f"{stem}_map", fmt, title=title, marker=None, fps=fps)
        if progress is not None:
            progress.update(1)
        return {**entry, "uniform_weight": 1 / keys.numel(), "note": "one attention map shared by every query",
                "map": {"png": f"{block.name}_map.png", "animation": os.path.basename(anim),
                        "top": top_positions(keys, geometry, clip_size, topk)}}
    given = queries is not None
    chosen = list(queries) if given else auto_queries(x[0], geometry, clip_size, num_queries)
    results = query_attention(block.module, x, geometry, clip_size, chosen, "user" if given else "auto")
    uniform = 1 / max(int((results[0].keys > 0).sum()), 1) if results else None
    entry.update(uniform_weight=uniform, queries=[])
    for j, qa in enumerate(results):
        marker = query_marker(geometry, qa, clip_size)
        title = f"{block.name} ({block.type}) {_describe(qa.query)} -> feature cell {qa.cell}"
        heat = qa.heat.numpy()
        write_png(montage(frames, [HeatRow("attention weight", heat, uniform)], title=title, marker=marker),
                  f"{stem}_q{j}.png")
        anim = _write_animation(frames, heat, f"{stem}_q{j}", fmt, title=f"{block.name} {_describe(qa.query)}",
                                marker=marker, fps=fps)
        entry["queries"].append({
            "query": dict(zip("tyx", qa.query)), "source": qa.source, "feature_cell": list(qa.cell),
            "cell_centre": [round(c, 2) for c in geometry.cell_centre(qa.cell)],
            "png": f"{block.name}_q{j}.png", "animation": os.path.basename(anim),
            "top": top_positions(qa.keys, geometry, clip_size, topk)})
        if progress is not None:
            progress.update(1)
    if hasattr(block.module, "latent_maps"):
        entry["latent"] = _latent_montage(block, x, geometry, frames, f"{stem}_latent.png")
    return entry


def _latent_montage(block, x: torch.Tensor, geometry: BlockGeometry, frames: np.ndarray, path: str) -> dict:
    """Montage of the most localised latent nodes (largest peak / mean of their visible→latent map)."""
    with torch.no_grad():
        maps = block.module.latent_maps(x)[0].float().cpu()  # d×T×H×W
    flat = maps.flatten(1)
    peakiness = flat.max(1).values / flat.mean(1).clamp_min(1e-12)
    peakiness[flat.max(1).values <= 0] = -1  # dead nodes last
    nodes = peakiness.argsort(descending=True)[:LATENT_NODES_SHOWN].tolist()
    heat = geometry.to_input(maps[nodes], frames.shape[:3]).numpy()
    rows = [HeatRow(f"latent node {n}", heat[i]) for i, n in enumerate(nodes)]
    write_png(montage(frames, rows, title=f"{block.name} ({block.type}): visible->latent assignment of "
                                          f"{len(nodes)} of {maps.shape[0]} latent nodes (most localised)"), path)
    return {"png": os.path.basename(path), "nodes": nodes, "num_nodes": int(maps.shape[0])}


def top_predictions(output: torch.Tensor, names: Sequence[str], k: int = 5) -> list[dict]:
    """Top-``k`` classes (softmax of a ``K`` model output) with their ``names``."""
    prob = torch.softmax(output.float(), dim=-1)
    values, ids = prob.topk(min(k, prob.numel()))
    return [{"class": i, "name": names[i], "prob": round(v, 6)}
            for v, i in zip(values.tolist(), ids.tolist())]


def build_and_load(cfg: CfgNode, checkpoint: str | None) -> tuple[nn.Module, torch.device]:
    """The config's model in eval mode on ``cfg.DEVICE``, with ``checkpoint`` loaded when given."""
    from ..engine.checkpoint import load_checkpoint
    from ..engine.distributed import resolve_device
    from ..models.build import build_model

    model = build_model(cfg)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    device = resolve_device(cfg.DEVICE)
    return model.to(device).eval(), device


def log_attention_to_tensorboard(model: nn.Module, clip: torch.Tensor, writer, step: int, *,
                                 mean: Sequence[float], std: Sequence[float], blocks: Sequence[str] | None = None,
                                 num_queries: int = 2, tag: str = "attention") -> int:
    """Add attention montages of one clip to TensorBoard (``writer.add_image``, HWC uint8); returns how many.

    Args:
        model: a ``VideoResNet`` in eval mode (any device).
        clip: one normalised view ``3×T×H×W`` (e.g. ``views[0]`` of a test item).
        mean, std: ``DATA.MEAN`` / ``DATA.STD``, to show the frames the model saw.
        blocks: block names (default: every block with spatial attention); ``num_queries`` automatic queries each.
    Images are tagged ``{tag}/{block}_q{j}`` (``{tag}/{block}_map`` for GC/SNL). A model without context
    blocks logs nothing.
    """
    if not model.context_blocks():
        return 0
    chosen = [b for b in select_blocks(model, blocks) if attention_kind(b.module) != "none"]
    device = next(model.parameters()).device
    _, inputs, _ = run_capturing(model, clip[None].to(device), chosen)
    frames = denormalise(clip.float().cpu(), mean, std)
    clip_size = frames.shape[:3]
    count = 0
    for block in chosen:
        x = inputs[block.name]
        geometry = geometry_for(model, block, x)
        if attention_kind(block.module) == "map":
            with torch.no_grad():
                heat = geometry.to_input(block.module.attention_map(x)[0].float().cpu(), clip_size).numpy()
            images = {"map": montage(frames, [HeatRow("attention", heat)], title=f"{block.name} attention map")}
        else:
            results = query_attention(block.module, x, geometry, clip_size,
                                      auto_queries(x[0], geometry, clip_size, num_queries), "auto")
            images = {f"q{j}": montage(frames, [HeatRow("attention weight", qa.heat.numpy())],
                                       title=f"{block.name} {_describe(qa.query)}",
                                       marker=query_marker(geometry, qa, clip_size))
                      for j, qa in enumerate(results)}
        for suffix, image in images.items():
            writer.add_image(f"{tag}/{block.name}_{suffix}", np.asarray(image), step, dataformats="HWC")
            count += 1
    return count


def main(args: argparse.Namespace) -> int:
    """``video-nl visualize``: see the module docstring and docs/visualize.md."""
    from ..data.lists import class_names

    cfg = args.cfg
    model, device = build_and_load(cfg, args.checkpoint)
    if not args.checkpoint:
        print(f"video-nl visualize: {INIT_NOTE}")
    blocks = select_blocks(model, args.block)
    clip = load_clip(cfg, args.video, clip_index=args.clip_index, start_time=args.start_time)
    clip_size = clip.frames.shape[:3]
    queries = [parse_query(q, clip_size) for q in args.query] if args.query else None
    if args.num_queries < 1:
        raise UserError(f"--num-queries must be >= 1 (got {args.num_queries}).")
    os.makedirs(args.out, exist_ok=True)
    output, inputs, _ = run_capturing(model, clip.video[None].to(device), blocks)
    steps = sum({"query": len(queries) if queries else args.num_queries, "map": 1, "none": 0}[attention_kind(b.module)]
                for b in blocks)
    entries = []
    with tqdm(total=steps, desc="attention", unit="map") as bar:
        for block in blocks:
            entries.append(visualize_block(model, block, inputs[block.name], clip.frames, out=args.out,
                                           queries=queries, num_queries=args.num_queries, topk=args.topk,
                                           fmt=args.format, fps=min(max(clip.fps / cfg.DATA.SAMPLING_RATE, 2.0), 10.0),
                                           progress=bar))
    report = {
        "video": args.video, "checkpoint": args.checkpoint, "initialised": not args.checkpoint,
        "note": INIT_NOTE if not args.checkpoint else "",
        "clip": {"clip_index": clip.clip_index, "start_time": args.start_time, "frame_indices": clip.indices,
                 "fps": clip.fps, "size": list(clip_size),
                 "view": f"short side scaled to DATA.TEST_CROP_SIZE={cfg.DATA.TEST_CROP_SIZE}, centre crop"},
        "coordinates": "t = frame in the clip (frame_indices gives the video frame), y/x = pixel row/column of "
                       "the crop; *_range are inclusive input ranges covered by a key cell",
        "predictions": top_predictions(output[0], class_names(cfg)),
        "blocks": entries,
    }
    atomic_json_dump(report, os.path.join(args.out, "attention.json"))
    for e in entries:
        for q in e.get("queries", []):
            print(f"{e['name']}: {q['source']} {_describe(tuple(q['query'].values()))} -> {q['png']}")
    print(f"video-nl visualize: wrote {args.out}/attention.json")
    return 0
