"""Bookkeeping of videos the data pipeline could not load during training and validation.

Train/val batches carry ``failures``: the ``(path, reason)`` pairs met while producing their items (a failed
video is replaced by another). :class:`FailureLog` reports each bad file once per epoch (or validation) — rank
0's as they come, the other ranks' after gathering them at the end — and counts the distinct files of all ranks
for the ``train_epoch`` / ``val_epoch`` line. The stop rule is the data module's ``loader.failures`` tracker
(unique failed videos of the list > ``DATA.MAX_FAILURE_RATIO``), checked on every rank after merging all ranks'
failures.

A dataset that knows a video is bad may pass over it as a replacement without listing it again (each DataLoader
worker has its own copy of that knowledge); the first failure of a file in an epoch is what gets reported.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from . import distributed as du


def gather_failures(failed: dict[str, str]) -> dict[str, str]:
    """Every rank's ``path → reason`` failures merged (the first reason in rank order wins).

    Collective: call it on all ranks at the same point.
    """
    merged: dict[str, str] = {}
    for part in du.all_gather_objects(failed):
        for path, reason in part.items():
            merged.setdefault(path, reason)
    return merged


class FailureLog:
    """This epoch's failed videos (path → reason), each file reported once per epoch through ``report``
    (an inert callable off rank 0). ``split`` names the list in reports ("val" → "failed to load val video …")."""

    def __init__(self, *, report: Callable[[str], None], split: str = "") -> None:
        self.report = report
        self.subject = f"{split} video " if split else ""
        self.reset()

    def reset(self) -> None:
        """Start a new epoch."""
        self.seen: dict[str, str] = {}

    def record(self, failures: Iterable[tuple[str, str]]) -> None:
        """Keep this rank's failures of one batch and report the files not yet seen this epoch."""
        for path, reason in failures:
            if path not in self.seen:
                self.seen[path] = reason
                self._report(path, reason)

    def end_epoch(self) -> int:
        """Gather every rank's failures, report those this rank has not, return the distinct files of the epoch.

        Collective: call it on all ranks at the end of the epoch.
        """
        merged = gather_failures(self.seen)
        for path, reason in merged.items():
            if path not in self.seen:
                self._report(path, reason)
        return len(merged)

    def _report(self, path: str, reason: str) -> None:
        self.report(f"failed to load {self.subject}{path}: {reason} (replaced by another video)")


def check_all_ranks(tracker: Any) -> None:
    """Merge every rank's failures into ``tracker`` (a data ``FailureTracker``) and apply its stop rule.

    Collective: call it on all ranks at the same point (decided from all-reduced counts), so every rank holds
    the same merged failures and takes the same decision.
    """
    tracker.merge(gather_failures(tracker.state()))
    tracker.check()
