"""Run logging on rank 0: ``json_stats`` lines, TensorBoard scalars and a progress bar.

* :class:`StatsLogger` prints ``json_stats: {...}`` (PySlowFast's format; ``_type`` train_iter,
  train_epoch, precise_bn, val_epoch, test_final) and appends the same object as one line to
  ``OUTPUT_DIR/log.jsonl``;
  numeric fields go to TensorBoard as ``{_type}/{field}`` at the given step.
* :class:`Progress` is a tqdm bar (loss / lr / clips/s / ETA) on a TTY and plain lines otherwise.
Non-main ranks get inert instances, so callers never branch on the rank. :func:`prepare_output_dir` checks
``OUTPUT_DIR`` up front; a failed write of a log line later is a :class:`UserError` too.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from tqdm import tqdm

from ..errors import UserError
from ..utils.io import append_text, ensure_writable_dir
from . import distributed as du


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else str(value)
    return value


class StatsLogger:
    """json_stats lines to stdout and ``log.jsonl``, plus TensorBoard scalars (when a writer is given)."""

    def __init__(self, *, output_dir: str, enabled: bool, tb_dir: str | None) -> None:
        self.enabled = enabled
        self.path = os.path.join(output_dir, "log.jsonl")
        self.writer = None
        if enabled:
            os.makedirs(output_dir, exist_ok=True)
            if tb_dir:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=tb_dir)

    def log(self, kind: str, stats: dict, *, step: int | None = None) -> None:
        """Emit one ``json_stats`` record of type ``kind``; scalars go to TensorBoard at ``step``."""
        if not self.enabled:
            return
        record = {"_type": kind, **{k: _clean(v) for k, v in stats.items()}}
        line = json.dumps(record)
        print(f"json_stats: {line}", flush=True)
        append_text(self.path, line + "\n")
        if self.writer is not None and step is not None:
            for key, value in stats.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)
            self.writer.flush()

    def info(self, message: str) -> None:
        """A plain progress/diagnostic line (rank 0 only)."""
        if self.enabled:
            print(f"[video_nl] {message}", flush=True)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def prepare_output_dir(cfg: Any, info: du.DistInfo) -> None:
    """Create ``OUTPUT_DIR`` and check it is writable before any work starts (rank 0, which writes the outputs).

    Collective: every rank raises the same :class:`UserError` when it is not, so no rank waits in a collective.
    """
    problem = ""
    if info.is_main:
        try:
            ensure_writable_dir(cfg.OUTPUT_DIR, name="OUTPUT_DIR")
        except UserError as e:
            problem = str(e)
    problem = du.broadcast_object(problem)
    if problem:
        raise UserError(problem)


def tensorboard_dir(cfg: Any) -> str | None:
    """``TENSORBOARD.LOG_DIR`` or ``OUTPUT_DIR/tensorboard``; None when TensorBoard is off."""
    if not cfg.TENSORBOARD.ENABLE:
        return None
    return cfg.TENSORBOARD.LOG_DIR or os.path.join(cfg.OUTPUT_DIR, "tensorboard")


def format_eta(seconds: float) -> str:
    """``H:MM:SS``."""
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Per-epoch progress: a tqdm bar on a TTY, else a plain line every ``period`` iterations."""

    def __init__(self, *, total: int, start: int, desc: str, enabled: bool, period: int) -> None:
        self.enabled = enabled
        self.period = max(period, 1)
        self.desc = desc
        self.total = total
        self.bar = tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True, leave=False) \
            if enabled and sys.stderr.isatty() else None

    def update(self, *, iteration: int, fields: dict[str, str]) -> None:
        """Advance to ``iteration`` (1-based count done) and show ``fields``."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(fields, refresh=False)
        elif iteration % self.period == 0 or iteration == self.total:
            text = " ".join(f"{k} {v}" for k, v in fields.items())
            print(f"[video_nl] {self.desc} {iteration}/{self.total} {text}", flush=True)

    def close(self) -> None:
        """Remove the bar."""
        if self.bar is not None:
            self.bar.close()


class Timer:
    """Splits each iteration into data wait (until the batch arrives) and total iteration time."""

    def __init__(self) -> None:
        self.mark = time.perf_counter()
        self.data_time = 0.0

    def data_ready(self) -> None:
        """Call when the batch has arrived."""
        self.data_time = time.perf_counter() - self.mark

    def iteration_done(self) -> float:
        """Call at the end of the step; returns the iteration time and restarts the clock."""
        now = time.perf_counter()
        elapsed, self.mark = now - self.mark, now
        return elapsed

    def timed(self, iterable: Any) -> Iterator[Any]:
        """Iterate ``iterable``, calling :meth:`data_ready` as each item arrives."""
        for item in iterable:
            self.data_ready()
            yield item
