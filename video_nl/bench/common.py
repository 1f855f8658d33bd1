"""Shared benchmark machinery: interleaved timing, peak-memory measurement, comparison rows and output.

Every number a bench reports is a *ratio measured in one process*: ours and the peer run interleaved
(round-robin, the order rotated every round) after warm-up, so machine noise (a shared 2-core CPU) hits
both alike. A row is ``{"bench", "case", "impl", "metric", "ours", "peer", "better_by", ...extra}`` with
``better_by > 1`` when ours wins: ``peer / ours`` for times and memory, ``ours / peer`` for throughputs.
"""
from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError

# How peak extra memory is measured, recorded in each memory row ("method") and in the README.
MEMORY_METHODS = {
    "cpu": "c10 CPU allocator events (torch.profiler profile_memory): peak of the running sum of "
           "allocations minus frees during the call, relative to its start",
    "cuda": "torch.cuda.max_memory_allocated() minus memory_allocated() before the call",
}
# Metrics where a larger value is better (throughputs); every other metric is a cost.
HIGHER_IS_BETTER = {"clips_per_s", "gflop_per_s", "decoded_frames_per_s", "videos_per_s"}
# Display units of the metrics (times are reported in milliseconds, memory in MiB).
UNITS = {"fwd_time": "ms", "fwd_bwd_time": "ms", "fwd_bwd_peak_mem": "MiB", "fwd_peak_mem": "MiB",
         "clips_per_s": "clips/s", "train_peak_mem_per_clip": "MiB", "train_step_time": "ms", "train_peak_mem": "MiB"}


@dataclass(frozen=True)
class Stats:
    """Median, minimum and maximum of repeated measurements."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Iterable[float]) -> Stats:
        """Summarise a non-empty sequence of samples."""
        values = list(samples)
        if not values:
            raise ValueError("no samples")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def scaled(self, factor: float) -> Stats:
        """The same statistics multiplied by ``factor`` (a unit change)."""
        return Stats(self.median * factor, self.min * factor, self.max * factor, self.n)

    def inverted(self, numerator: float) -> Stats:
        """``numerator / value`` for each statistic (e.g. seconds per step → clips per second)."""
        return Stats(numerator / self.median, numerator / self.max, numerator / self.min, self.n)


def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device``; a UserError when cuda is asked for but absent."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was given but torch sees no CUDA device; run with --device cpu.")
    return torch.device(name)


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """fp32 matrix products and convolutions without TF32 inside the block (CUDA convolutions use TF32 by
    default: 10-bit mantissas, so two fp32 paths that agree to 1e-6 could differ by 1e-3 after one conv)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so that wall-clock time covers them (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: Mapping[str, Callable[[], object]], *, device: torch.device, warmup: int,
                     repeats: int) -> dict[str, Stats]:
    """Seconds per call of each function, measured round-robin after ``warmup`` untimed rounds.

    Round ``r`` runs the functions starting at index ``r % len(fns)``, so no implementation always runs
    first (cache/thermal/neighbour-load effects are spread evenly).
    """
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + repeats):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            if r >= warmup:
                samples[name].append(time.perf_counter() - start)
    return {name: Stats.of(values) for name, values in samples.items()}


def gemm_gflops(*, device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 3) -> float:
    """This machine's ``dtype`` matrix-multiply rate (best of ``repeats`` n×n×n products), GFLOP/s."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def peak_memory(fn: Callable[[], object], *, device: torch.device) -> int:
    """Peak bytes allocated by ``fn`` above what was allocated when it started (see ``MEMORY_METHODS``)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return _cpu_peak_memory(fn)


def _cpu_peak_memory(fn: Callable[[], object]) -> int:
    """Peak of the running sum of CPU allocator events (allocations positive, frees negative)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    deltas: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            deltas.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    peak = current = 0
    for _, size in sorted(deltas):
        current += size
        peak = max(peak, current)
    return peak


def better_by(*, metric: str, ours: float, peer: float) -> float:
    """How many times better ours is: ours/peer for throughputs, peer/ours for costs (time, memory)."""
    if metric in HIGHER_IS_BETTER:
        return ours / peer if peer else float("inf")
    return peer / ours if ours else float("inf")


def make_row(*, bench: str, case: str, impl: str, metric: str, ours: Stats | float, peer: Stats | float,
             **extra: Any) -> dict[str, Any]:
    """One comparison row; Stats give ``ours_min/ours_max/peer_min/peer_max`` and ``repeats`` as extras."""
    row: dict[str, Any] = {"bench": bench, "case": case, "impl": impl, "metric": metric}
    for side, value in (("ours", ours), ("peer", peer)):
        row[side] = value.median if isinstance(value, Stats) else float(value)
    row["better_by"] = better_by(metric=metric, ours=row["ours"], peer=row["peer"])
    if metric in UNITS:
        row["unit"] = UNITS[metric]
    for side, value in (("ours", ours), ("peer", peer)):
        if isinstance(value, Stats):
            row[f"{side}_min"], row[f"{side}_max"] = value.min, value.max
            row["repeats"] = value.n
    row.update(extra)
    return row


def time_rows(*, bench: str, case: str, metric: str, stats: Mapping[str, Stats], peer: str,
              **extra: Any) -> list[dict[str, Any]]:
    """Rows comparing every non-peer entry of ``stats`` (seconds) with ``stats[peer]``, reported in ms."""
    ref = stats[peer].scaled(1e3)
    return [make_row(bench=bench, case=case, impl=impl, metric=metric, ours=s.scaled(1e3), peer=ref,
                     peer_impl=peer, **extra)
            for impl, s in stats.items() if impl != peer]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def format_row(row: Mapping[str, Any]) -> str:
    """One human-readable line: ``bench case impl metric: ours [min–max] vs peer → better_by×``."""
    unit = f" {row['unit']}" if "unit" in row else ""
    spread = f" [{_fmt(row['ours_min'])}–{_fmt(row['ours_max'])}]" if "ours_min" in row else ""
    flops = (f"  ({_fmt(row['gflop_per_s'])} GFLOP/s = {row['fraction_of_sgemm']:.0%} of sgemm)"
             if "fraction_of_sgemm" in row else
             f"  ({_fmt(row['gflop_per_s'])} GFLOP/s = {row['fraction_of_gemm']:.0%} of {row['gemm_dtype']} GEMM)"
             if "fraction_of_gemm" in row else "")
    return (f"{row['bench']:<11} {row['case']:<14} {row['impl']:<10} {row['metric']:<22} "
            f"{_fmt(row['ours'])}{spread}{unit} vs {_fmt(row['peer'])}{unit}  ×{row['better_by']:.2f}{flops}")


def emit(row: Mapping[str, Any], *, as_json: bool) -> None:
    """Print one row as a JSON line or as a table line (flushed: benches are slow)."""
    print(json.dumps(row, sort_keys=False) if as_json else format_row(row), flush=True)


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: Path) -> None:
    """Write rows as JSON lines, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
