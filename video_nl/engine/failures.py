"""Bookkeeping of videos the data pipeline could not load during training.

Training batches carry ``failures``: the ``(path, reason)`` pairs met while producing their items (a failed
video is replaced by another). :class:`FailureLog` reports each bad file once per epoch and counts them for
the ``train_epoch`` line; the stop rule is the data module's ``loader.failures`` tracker (unique failed
videos of the list > ``DATA.MAX_FAILURE_RATIO``), checked on every rank after merging all ranks' failures.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import distributed as du


class FailureLog:
    """Per-epoch count of failed video loads, each file reported once per epoch through ``report``."""

    def __init__(self, *, report: Callable[[str], None]) -> None:
        self.report = report
        self.reset()

    def reset(self) -> None:
        """Start a new epoch."""
        self.seen: set[str] = set()
        self.count = 0

    def record(self, failures: list[tuple[str, str]]) -> None:
        """Count this rank's failures of one batch and report files not yet seen this epoch."""
        self.count += len(failures)
        for path, reason in failures:
            if path not in self.seen:
                self.seen.add(path)
                self.report(f"failed to load {path}: {reason} (replaced by another video)")


def check_all_ranks(tracker: Any) -> None:
    """Merge every rank's failures into ``tracker`` (a data ``FailureTracker``) and apply its stop rule.

    Collective: call it on all ranks at the same point (decided from all-reduced counts).
    """
    for state in du.all_gather_objects(tracker.state()):
        tracker.merge(state)
    tracker.check()
