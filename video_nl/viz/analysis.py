"""``video-nl analyze-attention``: GCNet's query-independence measurement for every non-local block.

For a set of vectors {v_i} (i = 1..n) the average pairwise cosine distance is
``avg_{i≠j} (1 − cos(v_i, v_j)) / 2``. With unit vectors u_i = v_i/‖v_i‖,
``Σ_{i≠j} cos = ‖Σ_i u_i‖² − n``, so it costs one pass over the vectors (O(n·D), never n×n), and chunks of
vectors can be accumulated. GCNet's own formula averages over all n² ordered pairs, diagonal included:
``dist_all = dist · (n − 1)/n`` (reported too). Zero vectors (e.g. z − x of an untrained block) have no
direction and are skipped; with fewer than two left the distance is undefined (null).

Per block and video, measured on one test view (centre crop, middle clip; as ``video-nl visualize``):
(a) ``input``: the block input x at every position (C-dim), (b) ``output``: z − x at every position,
(c) ``attention``: every query's attention row over the keys (computed in chunks of queries).
Each is averaged over the videos.
"""
from __future__ import annotations

import argparse
import os

import torch
from tqdm import tqdm

from ..errors import UserError
from ..utils.io import atomic_json_dump
from .attention import build_and_load
from .capture import run_capturing, select_blocks
from .clip import load_clip

KINDS = ("input", "output", "attention")
QUERY_CHUNK = 1024


class PairwiseCosine:
    """Accumulates unit vectors (in chunks) to give the mean pairwise cosine distance of all of them."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0

    def add(self, vectors: torch.Tensor) -> None:
        """Add ``n×D`` vectors (zero vectors are skipped)."""
        v = vectors.double()
        norms = v.norm(dim=1)
        keep = norms > 0
        unit = (v[keep] / norms[keep, None]).sum(0)
        self.total = unit if self.total is None else self.total + unit
        self.count += int(keep.sum())

    def distance(self, *, include_diagonal: bool = False) -> float | None:
        """``avg (1 − cos)/2`` over pairs i ≠ j (or all n² ordered pairs); None for fewer than 2 vectors."""
        n = self.count
        if n < 2 or self.total is None:
            return None
        mean_cos = (float(self.total.square().sum()) - n) / (n * (n - 1))
        dist = (1.0 - mean_cos) / 2.0
        return dist * (n - 1) / n if include_diagonal else dist


def mean_pairwise_distance(vectors: torch.Tensor, *, include_diagonal: bool = False) -> float | None:
    """Mean pairwise cosine distance ``(1 − cos)/2`` of the rows of ``vectors`` (n×D)."""
    acc = PairwiseCosine()
    acc.add(vectors)
    return acc.distance(include_diagonal=include_diagonal)


def block_distances(module: torch.nn.Module, x: torch.Tensor, z: torch.Tensor, *,
                    chunk: int = QUERY_CHUNK) -> dict[str, dict[str, float | None]]:
    """The three distances (each with and without the diagonal) of one non-local block for one sample.

    Args:
        module: the block (with ``attention_rows``).
        x, z: its input and output, ``1×C×T×H×W``.
        chunk: queries per ``attention_rows`` call.
    """
    accs = {k: PairwiseCosine() for k in KINDS}
    accs["input"].add(x[0].flatten(1).t())
    accs["output"].add((z - x)[0].flatten(1).t())
    n = x[0, 0].numel()
    with torch.no_grad():
        for start in range(0, n, chunk):
            queries = torch.arange(start, min(start + chunk, n), device=x.device)
            accs["attention"].add(module.attention_rows(x, queries)[0].flatten(1))
    return {k: {"dist": a.distance(), "dist_all_pairs": a.distance(include_diagonal=True), "vectors": a.count}
            for k, a in accs.items()}


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def format_table(blocks: dict[str, dict]) -> str:
    """Text table: one row per block, one column per kind (mean over videos; n/a when undefined)."""
    lines = [f"{'block':<12}" + "".join(f"{k:>12}" for k in KINDS)]
    for name, stats in blocks.items():
        cells = [stats[k]["dist"] for k in KINDS]
        lines.append(f"{name:<12}" + "".join(f"{'n/a' if c is None else f'{c:.4f}':>12}" for c in cells))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """``video-nl analyze-attention``: see the module docstring."""
    cfg = args.cfg
    from ..data.datasets import read_split

    if args.num_videos < 1:
        raise UserError(f"--num-videos must be >= 1 (got {args.num_videos}).")
    if not args.checkpoint:
        print("video-nl analyze-attention: no --checkpoint: a freshly initialised model (z − x is 0, so the "
              "output distance is undefined; the numbers only describe the initialisation).")
    model, device = build_and_load(cfg, args.checkpoint)
    blocks = select_blocks(model, None, types=("nonlocal",))
    list_path, entries, _ = read_split(cfg, "test")
    per_video: dict[str, list[dict]] = {b.name: [] for b in blocks}
    videos = []
    for entry in tqdm(entries[:args.num_videos], desc="videos", unit="video"):
        clip = load_clip(cfg, entry.path)
        _, inputs, outputs = run_capturing(model, clip.video[None].to(device), blocks, outputs=True)
        for b in blocks:
            per_video[b.name].append(block_distances(b.module, inputs[b.name], outputs[b.name]))
        videos.append(entry.path)
    summary = {name: {k: {"dist": _mean([r[k]["dist"] for r in rows]),
                          "dist_all_pairs": _mean([r[k]["dist_all_pairs"] for r in rows])} for k in KINDS}
               for name, rows in per_video.items()}
    print(format_table(summary))
    out = args.out or os.path.join(cfg.OUTPUT_DIR, "attention_analysis.json")
    atomic_json_dump({
        "checkpoint": args.checkpoint, "test_list": list_path, "videos": videos,
        "definition": "mean over videos of avg_{i!=j} (1 - cos(v_i, v_j))/2 over positions i, j of one centre-crop "
                      "middle-clip view; dist_all_pairs averages over all n^2 ordered pairs (GCNet's 1/Np^2). "
                      "input: block input x; output: z - x; attention: attention rows over the (pooled) keys.",
        "blocks": summary, "per_video": per_video,
    }, out)
    print(f"video-nl analyze-attention: wrote {out}")
    return 0
