"""``video-nl predict``: top-k class names with scores for one video, using the test views of the config.

The video is decoded into ``TEST.NUM_ENSEMBLE_VIEWS × TEST.NUM_SPATIAL_CROPS`` views at ``DATA.TEST_CROP_SIZE``
(the same sampling and crops as ``video-nl test``), each view is softmaxed (per-class sigmoid with
``MODEL.HEAD_ACT sigmoid``: multi-label scores) and the views are aggregated with ``TEST.ENSEMBLE_METHOD``.
Class names come from ``DATA.CLASSNAMES_FILE`` / the data dir's classnames.json.
With ``--model FILE`` (a ``video-nl export`` artifact) views, class names and ensemble come from its metadata.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os

import torch

from ..data.lists import class_names
from ..errors import UserError
from . import distributed as du
from .evaluate import aggregate, view_probs
from .metrics import top_classes
from .runtime import autocast, load_model


def video_views(cfg, path: str) -> torch.Tensor:  # noqa: ANN001 - a CfgNode
    """All test views of ``path``: ``V×3×T×c×c`` float, clip-major (as ``MultiViewDataset``)."""
    from ..data.decoding import decode_clip
    from ..data.sampling import MultiClipSampler
    from ..data.transforms import multi_view_transform, multi_view_scale

    data = cfg.DATA
    sampler = MultiClipSampler(data.NUM_FRAMES, data.SAMPLING_RATE, data.TARGET_FPS, cfg.TEST.NUM_ENSEMBLE_VIEWS,
                               data.TEST_OFFSET_FORMULA, protocol=data.SAMPLING_PROTOCOL)
    result = decode_clip(path, sampler, backend=data.DECODING_BACKEND, threads=data.DECODE_THREADS,
                         timeout_s=data.DECODE_TIMEOUT_S, index_dir=data.FRAME_INDEX_DIR or None)
    frames = torch.from_numpy(result.frames)
    frames = frames.view(cfg.TEST.NUM_ENSEMBLE_VIEWS, data.NUM_FRAMES, *frames.shape[1:])
    scale = multi_view_scale(protocol=data.SAMPLING_PROTOCOL, num_crops=cfg.TEST.NUM_SPATIAL_CROPS,
                             crop_size=data.TEST_CROP_SIZE, jitter_scales=data.TRAIN_JITTER_SCALES)
    return multi_view_transform(frames, crop_size=data.TEST_CROP_SIZE, num_crops=cfg.TEST.NUM_SPATIAL_CROPS,
                                mean=data.MEAN, std=data.STD, scale=scale, protocol=data.SAMPLING_PROTOCOL)


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


def predict_artifact(cfg, *, model: str, video: str, topk: int) -> list[dict]:  # noqa: ANN001 - a CfgNode
    """:func:`predict` with a ``video-nl export`` artifact: views, class names and ensemble from its metadata
    (``cfg`` only supplies how files are read: decoder, threads, timeout)."""
    from ..deploy.artifact import apply_input_settings, load_artifact

    if not os.path.isfile(video):
        raise UserError(f"Video {video} does not exist.")
    if topk < 1:
        raise UserError(f"--topk must be >= 1, got {topk}.")
    artifact = load_artifact(model)
    view_cfg = apply_input_settings(cfg, artifact.meta)
    if artifact.clip[1] != artifact.clip[2]:
        raise UserError(f"{model} takes {artifact.clip[1]}x{artifact.clip[2]} frames; predict makes square test "
                        f"crops, so export with a square --clip T,S,S.")
    probs = view_probs(artifact, video_views(view_cfg, video), chunk=artifact.batch or max(cfg.TEST.BATCH_SIZE, 1),
                       device=torch.device("cpu"), autocast=contextlib.nullcontext(), act=view_cfg.MODEL.HEAD_ACT)
    scores = aggregate(probs, method=view_cfg.TEST.ENSEMBLE_METHOD)
    return top_classes(scores, artifact.class_names, k=topk)


def main(args: argparse.Namespace) -> int | None:
    """``video-nl predict --cfg FILE --checkpoint PATH --video PATH [--topk 5] [--json]``, or
    ``video-nl predict --model FILE --video PATH [...]`` for an exported artifact."""
    if args.model:
        if args.checkpoint:
            raise UserError("Give --model FILE (an exported artifact) or --cfg FILE --checkpoint PATH, not both.")
        top = predict_artifact(args.cfg, model=args.model, video=args.video, topk=args.topk)
    elif not (args.cfg_file and args.checkpoint):
        raise UserError("predict needs --cfg FILE --checkpoint PATH, or --model FILE (a `video-nl export` artifact).")
    else:
        top = predict(args.cfg, checkpoint=args.checkpoint, video=args.video, topk=args.topk)
    if args.json:
        source = {"model": args.model} if args.model else {"checkpoint": args.checkpoint}
        print(json.dumps({"video": args.video, **source, "predictions": top}))
    else:
        for rank, p in enumerate(top, start=1):
            print(f"{rank}. {p['name']:<30} {p['score']:.4f}")
    return 0
