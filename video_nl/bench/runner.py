"""``video-nl bench {nonlocal,model,loader,test-decode,scaling,export,frame-index,all}``: run benches, print and save the rows.

Each bench module exposes ``run(args) -> list[dict]`` (see :mod:`video_nl.bench.common` for the row format).
Rows are printed as soon as a bench finishes (JSON lines with ``--json``, else a table), then written to
``--out/bench.jsonl`` together with the plots and a markdown table (:mod:`video_nl.bench.report`).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any

from .common import emit, resolve_device, write_jsonl
from .report import write_report

# bench name -> (module, function); every function takes the argparse namespace and returns rows.
BENCHES: dict[str, tuple[str, str]] = {
    "nonlocal": ("video_nl.bench.nonlocal_bench", "run"),
    "model": ("video_nl.bench.model_bench", "run"),
    "loader": ("video_nl.bench.loader", "run_loader"),
    "test-decode": ("video_nl.bench.loader", "run_test_decode"),
    "scaling": ("video_nl.bench.scaling", "run"),
    "export": ("video_nl.bench.export_bench", "run"),
    "frame-index": ("video_nl.bench.frame_index_bench", "run"),
}


def run_bench(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run one bench by name and return its rows."""
    module, func = BENCHES[name]
    return getattr(importlib.import_module(module), func)(args)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``video-nl bench``; returns 0."""
    resolve_device(args.device)
    names = list(BENCHES) if args.which == "all" else [args.which]
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    for name in names:
        start = time.perf_counter()
        bench_rows = run_bench(name, args)
        for row in bench_rows:
            emit(row, as_json=args.json)
        rows.extend(bench_rows)
        print(f"# bench {name}: {len(bench_rows)} rows in {time.perf_counter() - start:.0f} s", file=sys.stderr,
              flush=True)
    write_jsonl(rows, out / "bench.jsonl")
    for path in write_report(rows, out=out, device=args.device):
        print(f"# wrote {path}", file=sys.stderr)
    return 0
