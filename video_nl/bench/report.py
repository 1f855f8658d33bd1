"""Bench rows → README material: a markdown table (``bench.md``) and PNG plots (``nonlocal.png``, ``scaling.png``)."""
from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

Row = Mapping[str, Any]


def machine_description(device: str) -> str:
    """One line naming the device, core count and torch version the numbers were taken on."""
    if device == "cuda" and torch.cuda.is_available():
        hw = torch.cuda.get_device_name()
    else:
        hw = f"{_cpu_model()} ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})"
    return f"{hw}; torch {torch.__version__}; Python {platform.python_version()}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def _num(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.0f}"


def markdown_table(rows: Iterable[Row]) -> str:
    """A GitHub markdown table: bench, case, impl, metric, ours [min–max], peer, better_by."""
    lines = ["| bench | case | impl | metric | ours | peer | better by |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = f" {r['unit']}" if "unit" in r else ""
        spread = f" [{_num(r['ours_min'])}–{_num(r['ours_max'])}]" if "ours_min" in r else ""
        lines.append(f"| {r['bench']} | {r['case']} | {r['impl']} | {r['metric']} | {_num(r['ours'])}{spread}{unit} "
                     f"| {_num(r['peer'])}{unit} | **{r['better_by']:.2f}×** |")
    return "\n".join(lines) + "\n"


def _select(rows: Iterable[Row], **match: str) -> list[Row]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def plot_nonlocal(rows: Sequence[Row], path: Path) -> bool:
    """Bar chart of better_by per case and impl for the nonlocal bench's fwd+bwd time and memory."""
    nl = _select(rows, bench="nonlocal")
    if not nl:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in nl))
    impls = list(dict.fromkeys(r["impl"] for r in nl))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / len(impls)
    for ax, metric, title in zip(axes, ("fwd_bwd_time", "fwd_bwd_peak_mem"), ("fwd+bwd time", "fwd+bwd peak memory")):
        for k, impl in enumerate(impls):
            values = [next((r["better_by"] for r in _select(nl, case=c, impl=impl, metric=metric)), 0.0)
                      for c in cases]
            ax.bar([i + k * width for i in range(len(cases))], values, width, label=impl)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([i + width * (len(impls) - 1) / 2 for i in range(len(cases))], cases)
        ax.set_yscale("log")
        ax.set_ylabel("× better than PyTorchVideo NonLocal")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_scaling(rows: Sequence[Row], path: Path) -> bool:
    """Log-log time and memory vs N = T·H·W per implementation (peer included), from the scaling bench."""
    sc = [r for r in _select(rows, bench="scaling") if "n" in r]
    if not sc:
        return False
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric, label in zip(axes, ("fwd_bwd_time", "fwd_bwd_peak_mem"), ("fwd+bwd time (ms)", "peak memory (MiB)")):
        series = _select(sc, metric=metric)
        impls = list(dict.fromkeys(r["impl"] for r in series))
        for impl in impls:
            pts = sorted((r["n"], r["ours"]) for r in series if r["impl"] == impl)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=impl)
        peer = sorted({(r["n"], r["peer"]) for r in series})
        if peer:
            ax.plot([p[0] for p in peer], [p[1] for p in peer], marker="s", linestyle="--", color="gray",
                    label=series[0].get("peer_impl", "peer"))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("N = T·H·W")
        ax.set_ylabel(label)
        ax.grid(True, which="both", linewidth=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(rows: Sequence[Row], *, out: Path, device: str) -> list[Path]:
    """Write ``bench.md`` (machine line + table) and whichever plots the rows allow; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    table = out / "bench.md"
    table.write_text(f"Machine: {machine_description(device)}\n\n{markdown_table(rows)}")
    written = [table]
    for name, plot in (("nonlocal.png", plot_nonlocal), ("scaling.png", plot_scaling)):
        if plot(rows, out / name):
            written.append(out / name)
    return written
