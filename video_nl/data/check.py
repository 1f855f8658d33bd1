"""Index many videos in parallel, and ``video-nl check-videos LIST [LIST ...]``: which videos will load as expected.

:func:`index_videos` builds (or refreshes) the frame index (:mod:`video_nl.data.frame_index`) of many videos
with ``workers`` decode helper processes, each file under a timeout, with a progress bar; entries already in
the index folder are reused, so an interrupted run resumes where it stopped. :func:`check_lists` does that for
the videos of dataset lists and reports per file:

* **unreadable** (with the reason) — the only problem that makes a file unusable (exit code 1);
* the container's frame count differs from the decodable count (the index's count is the one used);
* variable frame rate; the sequential decode ending with an error;
* needs the exact path: decord's random access would return wrong frames, so the loaders decode it with
  PyAV (correct, sometimes slower);
* too short for the configured clip (fewer frames than the clip spans: the samplers loop it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from .decoding import close_finished_helpers, index_video
from .frame_index import FrameIndex, default_index_dir, read_cached, user_cache_dir
from .lists import ListProblem, load_classnames, read_video_list
from .sampling import clip_span, frame_step
from .videofile import DecodeError

__all__ = ["IndexOutcome", "index_videos", "check_lists", "video_report", "summary_line"]

INDEX_TIMEOUT_S = 300.0  # per video: decode-built indexes of long AVI/MPEG files take a while


@dataclass(frozen=True)
class IndexOutcome:
    """The index of ``path`` (None when it cannot be indexed: ``reason``), and whether it was already cached."""

    path: str
    index: FrameIndex | None
    reason: str = ""
    reused: bool = False


def index_videos(paths: Sequence[str], *, index_dir: str | None = None, workers: int | None = None,
                 timeout_s: float = INDEX_TIMEOUT_S, rebuild: bool = False,
                 progress: bool | str = True) -> list[IndexOutcome]:
    """Index every video of ``paths`` into ``index_dir`` (default the user cache folder) with ``workers``
    helper processes (default: one per core); one :class:`IndexOutcome` per path, in order. ``progress`` shows
    a tqdm bar (a string is its label). ``timeout_s <= 0`` indexes in this process's threads (no timeout)."""
    index_dir = index_dir or user_cache_dir()
    workers = max(1, min(workers or os.cpu_count() or 1, len(paths) or 1))

    def one(path: str) -> IndexOutcome:
        try:  # a valid entry is read here; only videos to (re)index go to a helper process
            cached = None if rebuild else read_cached(path, index_dir)
        except DecodeError as e:
            return IndexOutcome(path, None, e.reason, reused=True)
        if cached is not None:
            return IndexOutcome(path, cached, reused=True)
        try:
            return IndexOutcome(path, index_video(path, index_dir=index_dir, timeout_s=timeout_s, rebuild=rebuild))
        except DecodeError as e:
            return IndexOutcome(path, None, e.reason)

    label = progress if isinstance(progress, str) else "index videos"
    try:
        with ThreadPoolExecutor(workers) as pool:
            return list(tqdm(pool.map(one, paths), total=len(paths), desc=label, unit="video",
                             disable=not progress))
    finally:
        close_finished_helpers()


def video_report(outcome: IndexOutcome, *, clip_frames: int, rate: int, target_fps: float) -> dict[str, Any]:
    """The per-file record of ``check-videos --json`` (fields documented in docs/data.md)."""
    index = outcome.index
    if index is None:
        return {"path": outcome.path, "usable": False, "reason": outcome.reason,
                "problems": [f"unreadable: {outcome.reason}"]}
    span = clip_span(clip_frames, frame_step(rate, index.fps, target_fps))
    record = {"path": outcome.path, "usable": True, "reason": "", "frames": index.num_frames,
              "container_frames": index.container_frames, "container_frames_from": index.container_frames_from,
              "fps": round(index.fps, 4),
              "duration_s": round(index.num_frames / index.fps, 3), "vfr": index.vfr, "index_method": index.method,
              "index_note": index.note, "route": "decord" if index.decord_exact else "pyav",
              "exact_path": index.decord_exact is False, "decord_note": index.decord_note,
              "too_short": index.num_frames < span, "clip_span": span, "decode_error": index.decode_error}
    problems = []
    if index.container_frames and index.container_frames != index.num_frames:
        claim = ("the header says" if index.container_frames_from == "header" else
                 "duration × frame rate gives")
        problems.append(f"{claim} {index.container_frames} frames, {index.num_frames} decode")
    if index.vfr:
        problems.append("variable frame rate")
    if index.decode_error:
        problems.append(f"decoding ends with an error after frame {index.num_frames - 1}: {index.decode_error}")
    if record["exact_path"]:
        problems.append(f"needs the exact path (decord unsafe: {index.decord_note})")
    if record["too_short"]:
        problems.append(f"too short: {index.num_frames} frames < the clip's span of {span}")
    return {**record, "problems": problems}


def _read_paths(list_path: str, cfg: Any) -> tuple[list[str], list[ListProblem]]:
    data = cfg.DATA
    names_file = data.CLASSNAMES_FILE or os.path.join(os.path.dirname(list_path), "classnames.json")
    classnames = load_classnames(names_file) if os.path.isfile(names_file) else None  # a missing file: ids only
    entries, problems = read_video_list(list_path, fmt=data.LIST_FORMAT, separator=data.PATH_LABEL_SEPARATOR,
                                        prefix=data.PATH_PREFIX, classnames=classnames)
    return list(dict.fromkeys(e.path for e in entries)), problems


def check_lists(lists: Sequence[str], cfg: Any, *, index_dir: str | None = None, workers: int | None = None,
                timeout_s: float = INDEX_TIMEOUT_S, rebuild: bool = False, progress: bool = True) -> dict[str, Any]:
    """Index and report every video of ``lists`` (read with ``cfg.DATA``'s list settings; the clip is
    ``DATA.NUM_FRAMES`` × ``DATA.SAMPLING_RATE`` at ``DATA.TARGET_FPS``). The index folder is ``index_dir``,
    else ``DATA.FRAME_INDEX_DIR``, else the default beside each list. Returns ``{"lists", "summary",
    "videos", "list_problems"}``."""
    start = time.perf_counter()
    data = cfg.DATA
    videos, list_problems, folders = [], [], []
    for list_path in lists:
        paths, problems = _read_paths(list_path, cfg)
        folder = index_dir or data.FRAME_INDEX_DIR or default_index_dir(list_path)
        folders.append(folder)
        list_problems += [str(p) for p in problems]
        outcomes = index_videos(paths, index_dir=folder, workers=workers, timeout_s=timeout_s, rebuild=rebuild,
                                progress=f"index {os.path.basename(list_path)}" if progress else False)
        for outcome in outcomes:
            record = video_report(outcome, clip_frames=data.NUM_FRAMES, rate=data.SAMPLING_RATE,
                                  target_fps=data.TARGET_FPS)
            videos.append({"list": list_path, **record, "reused": outcome.reused})
    usable = [v for v in videos if v["usable"]]
    summary = {"videos": len(videos), "usable": len(usable), "unreadable": len(videos) - len(usable),
               "count_mismatch": sum(bool(v["container_frames"]) and v["container_frames"] != v["frames"]
                                     for v in usable),
               "vfr": sum(v["vfr"] for v in usable), "exact_path": sum(v["exact_path"] for v in usable),
               "too_short": sum(v["too_short"] for v in usable), "decode_errors": sum(bool(v["decode_error"])
                                                                                     for v in usable),
               "reused": sum(v["reused"] for v in videos), "list_problems": len(list_problems),
               "clip": f"{data.NUM_FRAMES}x{data.SAMPLING_RATE}", "seconds": round(time.perf_counter() - start, 2)}
    summary["built"] = summary["videos"] - summary["reused"]
    return {"lists": list(lists), "index_dirs": list(dict.fromkeys(folders)), "summary": summary,
            "videos": videos, "list_problems": list_problems}


def summary_line(report: dict[str, Any]) -> str:
    """One line: counts of every kind of problem and where the index lives."""
    s = report["summary"]
    return (f"checked {s['videos']} videos in {len(report['lists'])} list(s): {s['usable']} usable, "
            f"{s['unreadable']} unreadable; {s['count_mismatch']} container count != decoded, {s['vfr']} variable "
            f"frame rate, {s['exact_path']} need the exact path, {s['too_short']} too short for {s['clip']} clips, "
            f"{s['decode_errors']} end with a decoding error; {s['list_problems']} list line(s) skipped; "
            f"index {', '.join(report['index_dirs'])} ({s['built']} built, {s['reused']} reused) in {s['seconds']} s")


def main(args: argparse.Namespace) -> int:
    """``video-nl check-videos LIST [LIST ...] [--workers N] [--json] [--cfg FILE] ...``: 0 when every video
    is usable, 1 when some are not."""
    timeout_s = INDEX_TIMEOUT_S if args.timeout is None else args.timeout
    report = check_lists(args.lists, args.cfg, index_dir=args.index_dir, workers=args.workers, timeout_s=timeout_s,
                         rebuild=args.rebuild, progress=not args.no_progress)
    if args.json:
        print(json.dumps(report, indent=1))
        print(summary_line(report), file=sys.stderr)
    else:
        for problem in report["list_problems"]:
            print(f"list: {problem}")
        for video in sorted(report["videos"], key=lambda v: v["usable"]):  # unreadable first
            for problem in video["problems"]:
                print(f"{video['path']}: {problem}")
        print(summary_line(report))
    return 0 if report["summary"]["unreadable"] == 0 else 1
