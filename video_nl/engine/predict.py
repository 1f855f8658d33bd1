"""``video-nl predict``: top-k class names with scores for one video, using the test views of the config.

The video is decoded into ``TEST.NUM_ENSEMBLE_VIEWS × TEST.NUM_SPATIAL_CROPS`` views at ``DATA.TEST_CROP_SIZE``
(the same sampling and crops as ``video-nl test``), each view is softmaxed (per-class sigmoid with
``MODEL.HEAD_ACT sigmoid``: multi-label scores) and the views are aggregated with ``TEST.ENSEMBLE_METHOD``. Class names come from ``DATA.CLASSNAMES_FILE`` / the data dir's classnames.json.
"""
from __future__ import annotations

import argparse
import json
import os

import torch

from ..errors import UserError
from . import distributed as du
from ..data.lists import class_names
from .evaluate import aggregate, view_probs
from .metrics import top_classes
from .runtime import autocast, load_model


def video_views(cfg, path: str) -> torch.Tensor:  # noqa: ANN001 - a CfgNode
    """All test views of ``path``: ``V×3×T×c×c`` float, clip-major (as ``MultiViewDataset``)."""
    from ..data.decoding import decode_clip
    from ..data.sampling import MultiClipSampler
    from ..data.transforms import multi_view_transform

    data = cfg.DATA
    sampler = MultiClipSampler(data.NUM_FRAMES, data.SAMPLING_RATE, data.TARGET_FPS, cfg.TEST.NUM_ENSEMBLE_VIEWS,
                               data.TEST_OFFSET_FORMULA)
    result = decode_clip(path, sampler, backend=data.DECODING_BACKEND, threads=data.DECODE_THREADS,
                         timeout_s=data.DECODE_TIMEOUT_S)
    frames = torch.from_numpy(result.frames)
    frames = frames.view(cfg.TEST.NUM_ENSEMBLE_VIEWS, data.NUM_FRAMES, *frames.shape[1:])
    return multi_view_transform(frames, crop_size=data.TEST_CROP_SIZE, num_crops=cfg.TEST.NUM_SPATIAL_CROPS,
                                mean=data.MEAN, std=data.STD)


def predict(cfg, *, checkpoint: str, video: str, topk: int) -> list[dict]:  # noqa: ANN001 - a CfgNode
    """``[{"class", "name", "score"}, ...]``, best first."""
    if not os.path.isfile(video):
        raise UserError(f"Video {video} does not exist.")
    if topk < 1:
        raise UserError(f"--topk must be >= 1, got {topk}.")
    info = du.DistInfo(rank=0, world_size=1, local_rank=0, device=du.resolve_device(cfg.DEVICE))
    model = load_model(cfg, info, checkpoint)
    probs = view_probs(model, video_views(cfg, video), chunk=max(cfg.TEST.BATCH_SIZE, 1), device=info.device,
                       autocast=autocast(cfg, info.device), act=cfg.MODEL.HEAD_ACT)
    scores = aggregate(probs, method=cfg.TEST.ENSEMBLE_METHOD)
    names = class_names(cfg)
    return top_classes(scores, names, k=topk)


def main(args: argparse.Namespace) -> int | None:
    """``video-nl predict --cfg FILE --checkpoint PATH --video PATH [--topk 5] [--json]``."""
    top = predict(args.cfg, checkpoint=args.checkpoint, video=args.video, topk=args.topk)
    if args.json:
        print(json.dumps({"video": args.video, "checkpoint": args.checkpoint, "predictions": top}))
    else:
        for rank, p in enumerate(top, start=1):
            print(f"{rank}. {p['name']:<30} {p['score']:.4f}")
    return 0
