"""Attention montages in TensorBoard during ``video-nl test`` (``TENSORBOARD.ATTENTION``).

:class:`AttentionMontageHook` is a ``video_nl.engine.evaluate.VideoHook``: the evaluator calls it after each
scored video and it draws the centre view's attention for the first :data:`ATTENTION_VIDEOS` videos.
"""
from __future__ import annotations

from typing import Any

import torch

from .attention import log_attention_to_tensorboard

ATTENTION_VIDEOS = 2  # test videos (per rank) whose attention montages go to TensorBoard


class AttentionMontageHook:
    """Log attention montages of the centre view (middle clip, centre crop) of the first test videos."""

    def __init__(self, cfg: Any, *, num_videos: int = ATTENTION_VIDEOS) -> None:
        self.clips, self.crops = cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS
        self.mean, self.std = cfg.DATA.MEAN, cfg.DATA.STD
        self.num_videos = num_videos

    def __call__(self, model: torch.nn.Module, item: dict, n: int, stats: Any) -> None:
        """``item["views"]`` is ``V×3×T×H×W`` (clip-major); ``n`` the 1-based video number on this rank."""
        if stats.writer is None or not item["ok"] or n > self.num_videos:
            return
        centre_view = (self.clips // 2) * self.crops + self.crops // 2
        log_attention_to_tensorboard(model, item["views"][centre_view], stats.writer, n - 1,
                                     mean=self.mean, std=self.std)
