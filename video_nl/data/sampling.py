"""Temporal sampling: which frame indices a train clip or the test clips of a video use (numpy, no torch).

Two protocols (``DATA.SAMPLING_PROTOCOL``). Notation: N frames in the video, T = ``DATA.NUM_FRAMES``,
r = ``DATA.SAMPLING_RATE``, K = ``TEST.NUM_ENSEMBLE_VIEWS`` test clips, k = 0..K−1.

``caffe2`` (the Caffe2 release's exact stride): step s = r (times fps / ``DATA.TARGET_FPS`` when TARGET_FPS > 0,
so a clip covers the same duration at any frame rate), span = floor((T − 1)·s) + 1 frames covered by a clip.
Clip frames are ``floor(start + i·s) mod N`` for i = 0..T−1 (short videos loop, the release's periodic sampling).

* train/val: start ~ U{0, …, max(N − span, 0)}.
* test, Δ = max(N − span, 0) (``DATA.TEST_OFFSET_FORMULA``): ``pyslowfast`` start = Δ·k/K (floored);
  ``mmaction2`` (1.x) start = round(Δ·k/(K−1)) (Δ//2 for K = 1, first clip at 0 and last flush with the end);
  ``caffe2`` start = floor(N/K·k) mod N.

``pyslowfast`` (PySlowFast's ``decoder.get_start_end_idx`` + ``temporal_sampling``, index for index):
clip_size = max(1, r·T/TARGET_FPS·fps) (r·T when TARGET_FPS is 0), Δ = max(N − clip_size, 0), clip frames
``torch.linspace(start, start + clip_size − 1, T)`` in float32, clamped to [0, N − 1] and truncated (short videos
repeat their last frame). An 8×8 clip at fps = TARGET_FPS spans 64 frames at spacing 63/7 = 9.

* train/val: start ~ U[0, Δ] (continuous, Python's ``random.uniform``).
* test: start = Δ·k/K, not floored (``TEST_OFFSET_FORMULA pyslowfast``; the other formulas give their integer
  starts on this Δ).

The samplers are small picklable callables ``info -> indices``, handed to
:func:`video_nl.data.decoding.decode_clip` so the indices use the frame count of the reader that decodes.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from .decoders import VideoInfo

FORMULAS = ("pyslowfast", "mmaction2", "caffe2")
PROTOCOLS = ("caffe2", "pyslowfast")


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


def pyslowfast_clip_size(num_frames: int, rate: int, fps: float, target_fps: float) -> float:
    """PySlowFast's clip extent in native frames: ``max(1, rate·num_frames/target_fps·fps)`` (evaluated in that
    order, as its decoder does, so 8·8/30·30 is exactly 64), or ``rate·num_frames`` when target_fps is 0."""
    if target_fps > 0:
        return max(1.0, rate * num_frames / target_fps * fps)
    return float(max(1, rate * num_frames))


def linspace_indices(start: float, end: float, num: int, video_frames: int) -> list[int]:
    """``torch.linspace(start, end, num).clamp(0, video_frames − 1).long()`` without torch (PySlowFast's
    ``temporal_sampling``): float32 end points and step, the first half counted up from ``start`` and the second
    half down from ``end`` with one rounding each (the fused multiply-add of torch's x86-64 AVX2/AVX-512 and
    arm64 CPU kernels), clamped, truncated."""
    lo, hi = np.float32(start), np.float32(end)
    if num == 1:
        values = np.array([lo])
    else:
        step = np.float64(np.float32((hi - lo) / np.float32(num - 1)))
        i = np.arange(num)
        values = np.where(i < num // 2, np.float64(lo) + step * i, np.float64(hi) - step * (num - 1 - i))
    values = np.minimum(values.astype(np.float32), np.float32(video_frames - 1))
    return [int(v) for v in np.maximum(values, 0).astype(np.int64)]


def pyslowfast_test_starts(*, video_frames: int, clip_size: float, num_clips: int, formula: str) -> list[float]:
    """Test clip starts in the pyslowfast protocol: Δ·k/K unfloored for ``pyslowfast`` (PySlowFast's
    ``delta * clip_idx / num_clips``), the integer starts of :func:`multi_clip_starts` for the others."""
    if formula == "pyslowfast":
        delta = max(video_frames - clip_size, 0)
        return [delta * k / num_clips for k in range(num_clips)]
    return multi_clip_starts(video_frames=video_frames, span=clip_size, num_clips=num_clips, formula=formula)


def protocol_clip(start: float, *, num_frames: int, rate: int, target_fps: float, info: VideoInfo,
                  protocol: str) -> list[int]:
    """The clip of ``num_frames`` frames starting at frame ``start`` under ``protocol`` (module docstring)."""
    if protocol == "pyslowfast":
        size = pyslowfast_clip_size(num_frames, rate, info.fps, target_fps)
        return linspace_indices(start, start + size - 1, num_frames, info.num_frames)
    if protocol == "caffe2":
        return clip_indices(start, num_frames=num_frames, step=frame_step(rate, info.fps, target_fps),
                            video_frames=info.num_frames)
    raise ValueError(f"unknown sampling protocol {protocol!r}; one of {PROTOCOLS}")


@dataclass(frozen=True)
class TrainSampler:
    """One clip at a random start drawn from ``seed`` (picklable ``info -> T indices``). The pyslowfast protocol
    draws ``random.Random(seed).uniform(0, Δ)``: the start PySlowFast draws after ``random.seed(seed)``."""

    num_frames: int
    rate: int
    target_fps: float
    seed: int
    protocol: str = "caffe2"

    def __call__(self, info: VideoInfo) -> list[int]:
        if self.protocol == "pyslowfast":
            size = pyslowfast_clip_size(self.num_frames, self.rate, info.fps, self.target_fps)
            start: float = random.Random(self.seed).uniform(0, max(info.num_frames - size, 0))
        else:
            span = clip_span(self.num_frames, frame_step(self.rate, info.fps, self.target_fps))
            start = int(np.random.default_rng(self.seed).integers(0, max(info.num_frames - span, 0) + 1))
        return protocol_clip(start, num_frames=self.num_frames, rate=self.rate, target_fps=self.target_fps,
                             info=info, protocol=self.protocol)


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
    protocol: str = "caffe2"

    def starts(self, info: VideoInfo) -> list[float]:
        """The K clips' start frames."""
        if self.protocol == "pyslowfast":
            size = pyslowfast_clip_size(self.num_frames, self.rate, info.fps, self.target_fps)
            return pyslowfast_test_starts(video_frames=info.num_frames, clip_size=size, num_clips=self.num_clips,
                                          formula=self.formula)
        span = clip_span(self.num_frames, frame_step(self.rate, info.fps, self.target_fps))
        return multi_clip_starts(video_frames=info.num_frames, span=span, num_clips=self.num_clips,
                                 formula=self.formula)

    def clips(self, info: VideoInfo) -> list[list[int]]:
        """The K clips' frame indices."""
        return [protocol_clip(s, num_frames=self.num_frames, rate=self.rate, target_fps=self.target_fps, info=info,
                              protocol=self.protocol) for s in self.starts(info)]

    def __call__(self, info: VideoInfo) -> list[int]:
        clips = self.clips(info)
        if self.only_clip is not None:
            return clips[self.only_clip]
        return [i for clip in clips for i in clip]
