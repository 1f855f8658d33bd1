"""One test view of a video for inspection: clip sampling as ``video-nl test``, centre crop, and the frames shown.

The view is the centre spatial crop of the test views: short side scaled as testing does (``DATA.TEST_CROP_SIZE``;
``TRAIN_JITTER_SCALES[0]`` for PySlowFast's single crop), then a ``TEST_CROP_SIZE²`` centre crop, frames sampled with
``DATA.NUM_FRAMES`` / ``DATA.SAMPLING_RATE`` at the test offsets of ``TEST.NUM_ENSEMBLE_VIEWS`` clips
(``DATA.TEST_OFFSET_FORMULA``), all under ``DATA.SAMPLING_PROTOCOL``.
The displayed frames are recovered from the normalised tensor, so they are exactly what the model saw.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..config import CfgNode
from ..data.decoding import FixedIndices, decode_clip, probe
from ..data.sampling import MultiClipSampler, protocol_clip
from ..data.transforms import multi_view_transform, multi_view_scale
from ..errors import UserError


@dataclass
class Clip:
    """A model input and what it shows.

    Attributes:
        video: float ``3×T×S×S``, normalised (the model input without the batch dim).
        frames: uint8 ``T×S×S×3``, the same clip de-normalised (RGB).
        indices: the video frame index of each clip frame.
        fps: the video's frame rate.
        clip_index: the test-view clip index, or None when chosen by start time.
    """

    video: torch.Tensor
    frames: np.ndarray
    indices: list[int]
    fps: float
    clip_index: int | None


def denormalise(video: torch.Tensor, mean, std) -> np.ndarray:
    """float ``3×T×H×W`` normalised -> uint8 ``T×H×W×3``."""
    m = torch.tensor(mean, dtype=video.dtype).view(3, 1, 1, 1)
    s = torch.tensor(std, dtype=video.dtype).view(3, 1, 1, 1)
    return ((video * s + m) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()


def load_clip(cfg: CfgNode, path: str, *, clip_index: int | None = None, start_time: float | None = None) -> Clip:
    """The centre-crop test view of ``path``: clip ``clip_index`` of the test clips (default: the middle one),
    or the clip starting at ``start_time`` seconds (wins over ``clip_index``).

    Raises:
        UserError: clip index or start time out of range; DecodeError (a UserError) for unreadable videos.
    """
    data = cfg.DATA
    num_clips = cfg.TEST.NUM_ENSEMBLE_VIEWS
    decode = {"backend": data.DECODING_BACKEND, "threads": data.DECODE_THREADS, "timeout_s": data.DECODE_TIMEOUT_S,
              "index_dir": data.FRAME_INDEX_DIR or None}
    if start_time is not None:
        info = probe(path, index_dir=decode["index_dir"])
        duration = info.num_frames / info.fps
        if not 0 <= start_time < duration:
            raise UserError(f"--start-time {start_time:g} s is outside {path} (duration {duration:.2f} s).")
        wanted = protocol_clip(math.floor(start_time * info.fps), num_frames=data.NUM_FRAMES, rate=data.SAMPLING_RATE,
                               target_fps=data.TARGET_FPS, info=info, protocol=data.SAMPLING_PROTOCOL)
        result = decode_clip(path, FixedIndices(tuple(wanted)), **decode)
        clip_index = None
    else:
        clip_index = num_clips // 2 if clip_index is None else clip_index
        if not 0 <= clip_index < num_clips:
            raise UserError(f"--clip-index {clip_index} is out of range: TEST.NUM_ENSEMBLE_VIEWS is {num_clips}, "
                            f"so valid clip indices are 0..{num_clips - 1}.")
        sampler = MultiClipSampler(num_frames=data.NUM_FRAMES, rate=data.SAMPLING_RATE, target_fps=data.TARGET_FPS,
                                   num_clips=num_clips, formula=data.TEST_OFFSET_FORMULA, only_clip=clip_index,
                                   protocol=data.SAMPLING_PROTOCOL)
        result = decode_clip(path, sampler, **decode)
    scale = multi_view_scale(protocol=data.SAMPLING_PROTOCOL, num_crops=cfg.TEST.NUM_SPATIAL_CROPS,
                             crop_size=data.TEST_CROP_SIZE, jitter_scales=data.TRAIN_JITTER_SCALES)
    video = multi_view_transform(torch.from_numpy(result.frames), crop_size=data.TEST_CROP_SIZE, num_crops=1,
                                 mean=data.MEAN, std=data.STD, scale=scale, protocol=data.SAMPLING_PROTOCOL)[0]
    return Clip(video=video, frames=denormalise(video, data.MEAN, data.STD), indices=list(result.indices),
                fps=result.info.fps, clip_index=clip_index)
