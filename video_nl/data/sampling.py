"""Temporal sampling: which frame indices a train clip or the test clips of a video use (numpy, no torch).

Notation: N frames in the video, T = ``DATA.NUM_FRAMES``, step s = ``DATA.SAMPLING_RATE`` (times
fps / ``DATA.TARGET_FPS`` when TARGET_FPS > 0, so a clip covers the same duration at any frame rate),
span = floor((T − 1)·s) + 1 frames covered by a clip. Clip frames are ``floor(start + i·s) mod N`` for
i = 0..T−1 (short videos loop, as the Caffe2 release's periodic sampling).

* train/val: start ~ U{0, …, max(N − span, 0)}.
* test, K = ``TEST.NUM_ENSEMBLE_VIEWS`` clips, Δ = max(N − span, 0), k = 0..K−1 (``DATA.TEST_OFFSET_FORMULA``):
  ``pyslowfast`` start = Δ·k/K (floored); ``mmaction2`` (1.x) start = round(Δ·k/(K−1)) (Δ//2 for K = 1, first
  clip at 0 and last flush with the end); ``caffe2`` start = floor(N/K·k) mod N.

The samplers are small picklable callables ``info -> indices``, handed to
:func:`video_nl.data.decoding.decode_clip` so the indices use the frame count of the reader that decodes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .decoders import VideoInfo

FORMULAS = ("pyslowfast", "mmaction2", "caffe2")


def frame_step(rate: int, fps: float, target_fps: float) -> float:
    """Native frames between sampled frames: ``rate``, or ``rate·fps/target_fps`` when target_fps > 0."""
    return rate * fps / target_fps if target_fps > 0 else float(rate)


def clip_span(num_frames: int, step: float) -> int:
    """Native frames covered by a clip of ``num_frames`` frames at ``step``."""
    return math.floor((num_frames - 1) * step) + 1


def clip_indices(start: float, *, num_frames: int, step: float, video_frames: int) -> list[int]:
    """``floor(start + i·step) mod video_frames`` for i < num_frames."""
    return [int(math.floor(start + i * step)) % video_frames for i in range(num_frames)]


def multi_clip_starts(*, video_frames: int, span: int, num_clips: int, formula: str) -> list[float]:
    """Start frame of each of the ``num_clips`` test clips (see the module docstring)."""
    delta = max(video_frames - span, 0)
    if formula == "pyslowfast":
        return [math.floor(delta * k / num_clips) for k in range(num_clips)]
    if formula == "mmaction2":
        if num_clips == 1:
            return [delta // 2]
        return [float(np.round(k * delta / (num_clips - 1))) for k in range(num_clips)]
    if formula == "caffe2":
        return [math.floor(video_frames / num_clips * k) % video_frames for k in range(num_clips)]
    raise ValueError(f"unknown test offset formula {formula!r}; one of {FORMULAS}")


@dataclass(frozen=True)
class TrainSampler:
    """One clip at a random start drawn from ``seed`` (picklable ``info -> T indices``)."""

    num_frames: int
    rate: int
    target_fps: float
    seed: int

    def __call__(self, info: VideoInfo) -> list[int]:
        step = frame_step(self.rate, info.fps, self.target_fps)
        delta = max(info.num_frames - clip_span(self.num_frames, step), 0)
        start = int(np.random.default_rng(self.seed).integers(0, delta + 1))
        return clip_indices(start, num_frames=self.num_frames, step=step, video_frames=info.num_frames)


@dataclass(frozen=True)
class MultiClipSampler:
    """All test clips of a video, clip-major: ``info -> K·T indices`` (clip k is ``[k·T, (k+1)·T)``).

    With ``only_clip`` set, just that clip's T indices (the per-view path).
    """

    num_frames: int
    rate: int
    target_fps: float
    num_clips: int
    formula: str
    only_clip: int | None = None

    def clips(self, info: VideoInfo) -> list[list[int]]:
        """The K clips' frame indices."""
        step = frame_step(self.rate, info.fps, self.target_fps)
        starts = multi_clip_starts(video_frames=info.num_frames, span=clip_span(self.num_frames, step),
                             num_clips=self.num_clips, formula=self.formula)
        return [clip_indices(s, num_frames=self.num_frames, step=step, video_frames=info.num_frames) for s in starts]

    def __call__(self, info: VideoInfo) -> list[int]:
        clips = self.clips(info)
        if self.only_clip is not None:
            return clips[self.only_clip]
        return [i for clip in clips for i in clip]
