"""Frame-index bench: what knowing every video's true frame count and exact routing costs.

* ``index_ms_per_video`` — :func:`~video_nl.data.frame_index.build_index` per video (packet scan, or a
  sequential decode with pixel CRCs where timestamps cannot be trusted, plus decord's exactness check) vs the
  peer: counting frames by a plain sequential PyAV decode, the only other way to know the true count. Two
  file classes: the loader bench's H.264 mp4 (320×256, 10 s, 30 fps: scanned) and UCF101-like MPEG-4 Part 2
  AVI with B-frames (320×240, 7 s, 25 fps: decoded). Interleaved rounds, medians.
* ``videos_per_s`` — :func:`~video_nl.data.check.index_videos` (what ``video-nl check-videos`` runs) on a
  list of hard links to the mp4 videos (1000; 100 with ``--quick``) with 2 workers vs 1 worker, cold index
  folders. Hard links share the page cache, so this measures CPU cost, not disk reads.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import av
import numpy as np
import torch

from ..data.check import index_videos
from ..data.encoding import write_video
from ..data.frame_index import build_index
from .common import make_row, time_interleaved
from .loader import _write_videos


def _write_avi(path: str, *, seconds: float, fps: int = 25) -> str:
    """MPEG-4 Part 2 with B-frames in AVI (DivX/Xvid-style, as UCF101 and HMDB51), 320×240."""
    texture = np.kron(np.random.default_rng(7).integers(0, 256, (40, 48, 3), dtype=np.uint8),
                      np.ones((8, 8, 1), np.uint8))
    frames = (np.roll(texture, (t, 2 * t), (0, 1))[:240, :320] for t in range(int(seconds * fps)))
    write_video(path, frames, fps=fps, codec="mpeg4", container_format="avi", gop=12, bframes=2)
    return path


def _count_by_decoding(path: str) -> int:
    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def _per_video_row(case: str, paths: list[str], rounds: int) -> dict:
    fns = {"ours": lambda: [build_index(p) for p in paths], "peer": lambda: [_count_by_decoding(p) for p in paths]}
    stats = time_interleaved(fns, device=torch.device("cpu"), warmup=1, repeats=rounds)
    return make_row(bench="frame-index", case=case, metric="index_ms_per_video",
                    impl="build_index vs counting frames by a sequential decode",
                    ours=stats["ours"].scaled(1e3 / len(paths)), peer=stats["peer"].scaled(1e3 / len(paths)),
                    unit="ms", videos=len(paths))


def _list_row(folder: str, sources: list[str], size: int) -> dict:
    """``index_videos`` on ``size`` hard links to ``sources``: 2 workers vs 1, each into a cold index folder."""
    links = os.path.join(folder, "links")
    os.makedirs(links)
    listed = [os.path.join(links, f"v{i:05d}.mp4") for i in range(size)]
    for i, path in enumerate(listed):
        os.link(sources[i % len(sources)], path)
    seconds = {}
    for workers in (2, 1):
        start = time.perf_counter()
        outcomes = index_videos(listed, index_dir=os.path.join(folder, f"index_{workers}"), workers=workers,
                                progress=False)
        seconds[workers] = time.perf_counter() - start
        failed = [o for o in outcomes if o.index is None]
        if failed:
            raise RuntimeError(f"indexing failed on {failed[0].path}: {failed[0].reason}")
    return make_row(bench="frame-index", case=f"{size} videos (h264 mp4 hard links)", metric="videos_per_s",
                    impl="index_videos (check-videos) --workers 2 vs --workers 1", ours=size / seconds[2],
                    peer=size / seconds[1], unit="videos/s", seconds_workers_2=round(seconds[2], 2),
                    seconds_workers_1=round(seconds[1], 2), load_average=round(os.getloadavg()[0], 2))


def run(args: argparse.Namespace) -> list[dict]:
    """Per-video index cost against a sequential decode, and a list's indexing throughput with 2 vs 1 workers."""
    quick = getattr(args, "quick", False)
    count, rounds, list_size = (2, 2, 100) if quick else (4, 5, 1000)
    with tempfile.TemporaryDirectory(prefix="video_nl_bench_") as folder:
        mp4s = _write_videos(folder, count=count, seconds=10)
        avis = [_write_avi(os.path.join(folder, f"ucf_{i}.avi"), seconds=7) for i in range(count)]
        return [_per_video_row("h264 mp4 320x256 10s@30fps (packet scan)", mp4s, rounds),
                _per_video_row("mpeg4 avi 320x240 7s@25fps B-frames (decoded)", avis, rounds),
                _list_row(folder, mp4s, list_size)]
