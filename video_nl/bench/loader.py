"""Data benches: train-clip throughput vs PyTorchVideo's ``Kinetics``, and test-time decoded frames.

Both benches write their own videos (320×256, 30 fps, H.264 with the encoder's default GOP, like short-side-
256 Kinetics) in a temporary folder, so they run anywhere.

* ``loader`` — clips/s of the 8×8 train pattern (random 64-frame window, 8 frames, random scale + 224 crop +
  flip + normalise) in one process: our :class:`VideoClipDataset` (decord, exact-index decoding) vs
  ``pytorchvideo.data.Kinetics(decoder="pyav", decode_audio=False)`` with a random 64-frame clip sampler and
  a plain-function transform doing the same temporal subsampling and spatial work. Rounds alternate between
  the two after a warm-up; the table reports medians.
* ``test-decode`` — frames the decoder produces per video for 10 clips × 3 crops, decoding the union of all
  views once vs one decode per view (PySlowFast's replication). Both go through our PyAV path, which counts
  every frame coming out of the decoder (including those between a keyframe and the first needed frame).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import torch

from ..config import get_default_config
from ..data.datasets import VideoClipDataset
from ..data.decoding import decode_clip
from ..data.encoding import write_video
from ..data.sampling import MultiClipSampler
from ..data.transforms import train_transform


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


def _peer_dataset(csv: str, cfg: Any):
    from pytorchvideo.data import Kinetics, make_clip_sampler

    data = cfg.DATA
    span_s = data.NUM_FRAMES * data.SAMPLING_RATE / 30.0
    g = torch.Generator().manual_seed(0)

    def transform(item: dict) -> dict:  # pytorchvideo.transforms is broken with current torchvision
        video = item["video"]  # C×T'×H×W float 0..255, every frame of the window
        keep = torch.linspace(0, video.shape[1] - 1, data.NUM_FRAMES).long()
        frames = video[:, keep].permute(1, 2, 3, 0).round().to(torch.uint8)
        item["video"] = train_transform(frames, jitter_scales=data.TRAIN_JITTER_SCALES, crop_size=data.TRAIN_CROP_SIZE,
                                        flip=True, mean=data.MEAN, std=data.STD, generator=g)
        return item

    return Kinetics(data_path=csv, clip_sampler=make_clip_sampler("random", span_s), decoder="pyav",
                    decode_audio=False, transform=transform)


def _time(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def run_loader(args: argparse.Namespace) -> list[dict]:
    """Train-pattern clips/s, ours vs PyTorchVideo (one process each, interleaved rounds, medians)."""
    quick = getattr(args, "quick", False)
    rounds, per_round = (3, 4) if quick else (7, 12)
    with tempfile.TemporaryDirectory(prefix="video_nl_bench_") as folder:
        paths = _write_videos(folder, count=3 if quick else 8, seconds=4 if quick else 10)
        cfg = _cfg(folder, paths)
        ours_ds = VideoClipDataset(cfg, "train")
        counter = iter(range(10 ** 9))
        ours = lambda: ours_ds[(0, next(counter) % len(ours_ds))]  # noqa: E731
        peer_ds = _peer_dataset(os.path.join(folder, "train.csv"), cfg)
        peer_it = iter(peer_ds)

        def peer() -> None:  # the iterable dataset yields one clip per video per pass: start another pass
            nonlocal peer_it
            try:
                next(peer_it)
            except StopIteration:
                peer_it = iter(peer_ds)
                next(peer_it)
        _time(ours, 2), _time(peer, 2)  # warm-up: helper process start, imports, caches
        ours_rates, peer_rates = [], []
        for _ in range(rounds):
            ours_rates.append(_time(ours, per_round))
            peer_rates.append(_time(peer, per_round))
    o, p = statistics.median(ours_rates), statistics.median(peer_rates)
    case = f"train 8x8 224crop 320x256@30fps {len(paths)} videos"
    return [{"bench": "loader", "case": case, "impl": "video_nl VideoClipDataset (decord) vs pytorchvideo Kinetics (pyav)",
             "metric": "clips_per_s", "ours": round(o, 2), "peer": round(p, 2), "better_by": round(o / p, 2),
             "target": ">= 2", "rounds": rounds, "clips_per_round": per_round}]


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
