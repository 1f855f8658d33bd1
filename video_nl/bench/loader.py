"""Data benches: train-clip throughput vs PyTorchVideo's ``Kinetics``, and test-time decoded frames.

Both benches write their own videos (320×256, 30 fps, H.264 with the encoder's default GOP, like short-side-
256 Kinetics) in a temporary folder, so they run anywhere.

* ``loader`` — clips/s of the 8×8 train pattern (random start, 8 frames at stride 8, random short-side scale
  in [256, 320] + 224 crop + flip + normalise → float 3×8×224×224) in one process with one intra-op thread (as
  in a DataLoader worker): our :class:`VideoClipDataset` (decord in the timeout helper process, exact-index
  decoding, default config, frame index built ahead) vs ``pytorchvideo.data.Kinetics(decoder="pyav",
  decode_audio=False)`` with a random 64-frame clip sampler and PyTorchVideo's train recipe written in torch
  ops (:func:`_peer_transform`).
  A second row runs our dataset with ``DATA.DECODING_BACKEND pyav`` (which skips non-reference frames before
  the clip), a third with ``DATA.SAMPLING_PROTOCOL pyslowfast`` (decord; a 64-frame clip span as the peer's). Rounds of 8 clips alternate (order rotated) after a warm-up round; the rows report medians.
* ``test-decode`` — frames the decoder produces per video for 10 clips × 3 crops, decoding the union of all
  views once vs one decode per view (PySlowFast's replication). Both go through our PyAV path, which counts
  every frame coming out of the decoder (including those between a keyframe and the first needed frame).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import get_default_config
from ..data.check import index_videos
from ..data.datasets import VideoClipDataset
from ..data.decoding import decode_clip
from ..data.encoding import write_video
from ..data.frame_index import default_index_dir
from ..data.sampling import MultiClipSampler
from .common import make_row, time_interleaved


def _write_videos(folder: str, *, count: int, seconds: float, fps: int = 30) -> list[str]:
    """Smoothly moving random textures, ``seconds`` long at 320×256 (W×H)."""
    paths = []
    for v in range(count):
        rng = np.random.default_rng(v)
        texture = np.kron(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
        frames = (np.roll(texture, (t, 2 * t), axis=(0, 1))[:256, :320] for t in range(int(seconds * fps)))
        paths.append(os.path.join(folder, f"video_{v:02d}.mp4"))
        write_video(paths[-1], frames, fps=fps, crf=23, threads=0)
    return paths


def _cfg(folder: str, paths: list[str]) -> Any:
    with open(os.path.join(folder, "train.csv"), "w") as f:
        f.writelines(f"{p} {i % 2}\n" for i, p in enumerate(paths))
    cfg = get_default_config()
    cfg.DATA.PATH_TO_DATA_DIR, cfg.MODEL.NUM_CLASSES = folder, 2
    cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE = 8, 8
    return cfg


def _peer_transform(cfg: Any, generator: torch.Generator):
    """PyTorchVideo's Kinetics train recipe in plain torch ops (``pytorchvideo.transforms`` is broken with the
    current torchvision), in its order: temporal subsample at stride ``SAMPLING_RATE``, ``/255`` and
    normalise, random short-side scale (bilinear ``F.interpolate``), random crop, random flip. The output is
    the same normalised float ``3×T×crop×crop`` clip as ours."""
    data = cfg.DATA
    mean = torch.tensor(data.MEAN).view(3, 1, 1, 1)
    std = torch.tensor(data.STD).view(3, 1, 1, 1)
    low, high, crop = *data.TRAIN_JITTER_SCALES, data.TRAIN_CROP_SIZE

    def transform(item: dict) -> dict:
        video = item["video"][:, ::data.SAMPLING_RATE][:, :data.NUM_FRAMES]  # C×T×H×W float 0..255
        video = (video / 255.0 - mean) / std
        h, w = video.shape[-2:]
        size = int(torch.randint(low, high + 1, (1,), generator=generator))
        new_h, new_w = (size, round(w * size / h)) if h <= w else (round(h * size / w), size)
        video = F.interpolate(video, size=(new_h, new_w), mode="bilinear", align_corners=False)
        top = int(torch.randint(0, new_h - crop + 1, (1,), generator=generator))
        left = int(torch.randint(0, new_w - crop + 1, (1,), generator=generator))
        video = video[..., top:top + crop, left:left + crop]
        item["video"] = video.flip(-1) if bool(torch.rand((), generator=generator) < 0.5) else video
        return item

    return transform


def _peer_clips(csv: str, cfg: Any) -> Callable[[], dict]:
    """Next-clip function of ``pytorchvideo.data.Kinetics`` (PyAV, random window of NUM_FRAMES·SAMPLING_RATE
    frames at 30 fps, one clip per video per pass; a new pass starts when one ends)."""
    from pytorchvideo.data import Kinetics, make_clip_sampler

    span_s = cfg.DATA.NUM_FRAMES * cfg.DATA.SAMPLING_RATE / 30.0
    dataset = Kinetics(data_path=csv, clip_sampler=make_clip_sampler("random", span_s), decoder="pyav",
                       decode_audio=False, transform=_peer_transform(cfg, torch.Generator().manual_seed(0)))
    clips = iter(dataset)

    def next_clip() -> dict:
        nonlocal clips
        try:
            return next(clips)
        except StopIteration:
            clips = iter(dataset)
            return next(clips)

    return next_clip


def _our_clips(cfg: Any, backend: str, protocol: str = "caffe2") -> Callable[[], dict]:
    """Next-clip function of our train :class:`VideoClipDataset` with ``backend`` and sampling ``protocol``
    (cycling through the videos)."""
    cfg = copy.deepcopy(cfg)
    cfg.DATA.DECODING_BACKEND, cfg.DATA.SAMPLING_PROTOCOL = backend, protocol
    dataset = VideoClipDataset(cfg, "train")
    counter = itertools.count()
    return lambda: dataset[(0, next(counter) % len(dataset))]


def _batch(next_clip: Callable[[], dict], clips: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(clips):
            next_clip()
    return run


@contextlib.contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads (as in a DataLoader worker, where PyTorch sets 1), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_loader(args: argparse.Namespace) -> list[dict]:
    """Train-pattern clips/s, ours (default decord backend, the PyAV backend, and decord with the pyslowfast
    sampling protocol) vs PyTorchVideo: one process, one intra-op thread (as in a DataLoader worker),
    interleaved rounds of ``clips`` clips each after a warm-up round; medians. The first row is the default
    configuration."""
    quick = getattr(args, "quick", False)
    videos, seconds, rounds, clips = (3, 4, 2, 3) if quick else (8, 10, 9, 8)
    with tempfile.TemporaryDirectory(prefix="video_nl_bench_") as folder:
        paths = _write_videos(folder, count=videos, seconds=seconds)
        cfg = _cfg(folder, paths)
        # the frame index is built ahead, as `video-nl check-videos` / `prepare-kinetics` do
        index_videos(paths, index_dir=default_index_dir(os.path.join(folder, "train.csv")), progress=False)
        fns = {"decord": _batch(_our_clips(cfg, "decord"), clips), "pyav": _batch(_our_clips(cfg, "pyav"), clips),
               "pyslowfast": _batch(_our_clips(cfg, "decord", "pyslowfast"), clips),
               "peer": _batch(_peer_clips(os.path.join(folder, "train.csv"), cfg), clips)}
        with _intra_op_threads(1):
            stats = time_interleaved(fns, device=torch.device("cpu"), warmup=1, repeats=rounds)
    case = f"train 8x8 224crop 320x256@30fps {videos} videos"
    runs = [("decord", "decord", "caffe2"), ("pyav", "pyav", "caffe2"), ("pyslowfast", "decord", "pyslowfast")]
    return [make_row(bench="loader", case=case, metric="clips_per_s",
                     impl=f"video_nl VideoClipDataset ({backend}, {protocol}) vs pytorchvideo Kinetics (pyav)",
                     ours=stats[name].inverted(clips), peer=stats["peer"].inverted(clips), target=">= 2",
                     backend=backend, protocol=protocol, default=name == "decord", clips_per_round=clips,
                     intra_op_threads=1, load_average=round(os.getloadavg()[0], 2))
            for name, backend, protocol in runs]


def run_test_decode(args: argparse.Namespace) -> list[dict]:
    """Decoded frames per video for 30-view testing: decode-once vs per-view (same PyAV decoder)."""
    quick = getattr(args, "quick", False)
    sampler = MultiClipSampler(8, 8, 0.0, 10, "pyslowfast")
    crops = 3
    with tempfile.TemporaryDirectory(prefix="video_nl_bench_") as folder:
        paths = _write_videos(folder, count=1 if quick else 3, seconds=10)
        once, per_view, t_once, t_view = [], [], [], []
        for path in paths:
            start = time.perf_counter()
            once.append(decode_clip(path, sampler, backend="pyav", timeout_s=0).decoded)
            t_once.append(time.perf_counter() - start)
            start = time.perf_counter()
            per_view.append(sum(decode_clip(path, dataclasses.replace(sampler, only_clip=v // crops), backend="pyav",
                                            timeout_s=0).decoded for v in range(sampler.num_clips * crops)))
            t_view.append(time.perf_counter() - start)
    o, p = statistics.mean(once), statistics.mean(per_view)
    to, tp = statistics.mean(t_once), statistics.mean(t_view)
    case = "10 clips x 3 crops, 8x8, 10 s 320x256@30fps"
    common = {"bench": "test-decode", "case": case, "impl": "decode-once vs per-view"}
    return [{**common, "metric": "decoded_frames_per_video", "ours": o, "peer": p, "better_by": round(p / o, 2),
             "ratio": round(o / p, 3), "target": "ratio <= 0.2"},
            {**common, "metric": "decode_s_per_video", "ours": round(to, 3), "peer": round(tp, 3),
             "better_by": round(tp / to, 2)}]
