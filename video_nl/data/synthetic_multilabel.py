"""A multi-label synthetic dataset (``video-nl make-synthetic OUT --multi-label``): co-occurring events, some
visible in single frames and some only in time.

The frame is split into four quadrants ("slots"); each slot independently holds an event with probability
``event_prob`` (drawn uniformly from the ``classes`` events) or stays empty, so a video has 0–4 events and
its labels are the set of their classes (a video with no event is all-negative). Events:

0 ``disc``, 1 ``bars``: static shapes, the same in every frame — a frame-level model sees them.
2/3 ``move_down`` / ``move_up``: a square crosses its slot vertically.
4/5 ``grow`` / ``shrink``: a square grows (shrinks) about its centre.

Odd temporal events are their even partner rendered from the same slot seed and reversed in time, and
static events are time-invariant, so reversing a whole video maps its labels to the "swapped" set (down ↔
up, grow ↔ shrink) with the same probability: a frame-level model (C2D averages per-frame features) sees
the same frames either way and must score ``move_down`` and ``move_up`` alike — it can tell that a square
moves, not which way — while a model relating frames in time (I3D, non-local) can tell them apart.

Layout: ``OUT/{train,val}/video_{i:05d}.mp4``, lists ``train.csv``, ``val.csv`` and ``test.csv`` (the val
videos) in PySlowFast's multi-label form ``path l1,l2`` (the path alone for no label), ``classnames.json``.
Train with ``DATA.MULTI_LABEL True MODEL.LOSS_FUNC bce_logit MODEL.HEAD_ACT sigmoid MODEL.NUM_CLASSES 6``
(configs/Synthetic/*_multilabel.yaml). Same seed → bit-identical files.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from .encoding import write_video
from .synthetic import PALETTE, _disc, _square, write_dataset

EVENTS = ("disc", "bars", "move_down", "move_up", "grow", "shrink")
SLOTS = 4  # quadrants
DEFAULTS = dict(classes=6, train_videos=240, val_videos=60, frames=16, size=32, fps=8, event_prob=0.5)


def _static_disc(rng: np.random.Generator, t: int, q: int) -> np.ndarray:
    slot = np.zeros((t, q, q, 4), dtype=np.uint8)  # RGB + coverage mask
    radius = rng.uniform(0.25, 0.35) * q
    cy, cx = rng.uniform(0.45, 0.55, size=2) * q
    _disc(slot[0], cy, cx, radius, np.append(PALETTE[rng.integers(len(PALETTE))], 255))
    slot[1:] = slot[0]
    return slot


def _static_bars(rng: np.random.Generator, t: int, q: int) -> np.ndarray:
    slot = np.zeros((t, q, q, 4), dtype=np.uint8)
    colour = np.append(PALETTE[rng.integers(len(PALETTE))], 255)
    thickness, width = rng.uniform(0.14, 0.2) * q, rng.uniform(0.65, 0.8) * q
    for cy in (0.3 * q, 0.7 * q):
        y0, y1 = int(round(cy - thickness / 2)), int(round(cy + thickness / 2))
        x0 = int(round((q - width) / 2))
        slot[0, y0:y1, x0:x0 + int(round(width))] = colour
    slot[1:] = slot[0]
    return slot


def _move_down(rng: np.random.Generator, t: int, q: int) -> np.ndarray:
    slot = np.zeros((t, q, q, 4), dtype=np.uint8)
    colour = np.append(PALETTE[rng.integers(len(PALETTE))], 255)
    side = rng.uniform(0.3, 0.38) * q
    cx = rng.uniform(0.4, 0.6) * q
    for i, cy in enumerate(np.linspace(0.05 * q + side / 2, 0.95 * q - side / 2, t)):
        _square(slot[i], cy, cx, side, colour)
    return slot


def _grow(rng: np.random.Generator, t: int, q: int) -> np.ndarray:
    slot = np.zeros((t, q, q, 4), dtype=np.uint8)
    colour = np.append(PALETTE[rng.integers(len(PALETTE))], 255)
    cy, cx = rng.uniform(0.45, 0.55, size=2) * q
    for i, side in enumerate(np.linspace(0.15 * q, 0.85 * q, t)):
        _square(slot[i], cy, cx, side, colour)
    return slot


RENDERERS: tuple[Callable[[np.random.Generator, int, int], np.ndarray], ...] = (
    _static_disc, _static_bars, _move_down, _grow)


def render_event(event: int, seed: int, *, frames: int, quadrant: int) -> np.ndarray:
    """One slot's event: uint8 ``frames×q×q×4`` (RGB + coverage). Odd temporal events (3, 5) are their even
    partner from the same seed reversed in time; static events (0, 1) are the same in every frame."""
    rng = np.random.default_rng(seed)
    if event < 2:
        return RENDERERS[event](rng, frames, quadrant)
    slot = RENDERERS[event // 2 + 1](rng, frames, quadrant)
    return np.ascontiguousarray(slot[::-1]) if event % 2 else slot


def render(events: list[int | None], seed: int, *, frames: int = 16, size: int = 32) -> np.ndarray:
    """Frames (uint8 ``frames×size×size×3``) of a video whose quadrants (row-major) hold ``events``
    (None = empty slot)."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 70, size=3, dtype=np.uint8)
    video = np.broadcast_to(background, (frames, size, size, 3)).copy()
    q = size // 2
    slot_seeds = rng.integers(0, 2 ** 31, size=SLOTS)
    for s, event in enumerate(events):
        if event is None:
            continue
        slot = render_event(event, int(slot_seeds[s]), frames=frames, quadrant=q)
        region = video[:, (s // 2) * q:(s // 2 + 1) * q, (s % 2) * q:(s % 2 + 1) * q]
        covered = slot[..., 3:] > 0
        region[...] = np.where(covered, slot[..., :3], region)
    return video


def draw_events(rng: np.random.Generator, *, classes: int, event_prob: float) -> list[int | None]:
    """Each slot's event (None = empty): present with ``event_prob``, then uniform over the classes."""
    return [int(rng.integers(classes)) if rng.random() < event_prob else None for _ in range(SLOTS)]


def _job(task: tuple[str, list[int | None], int, int, int, int]) -> str:
    path, events, seed, frames, size, fps = task
    write_video(path, render(events, seed, frames=frames, size=size), fps=fps)
    return path


def make_synthetic_multilabel(out: str, *, classes: int = 6, train_videos: int = 240, val_videos: int = 60,
                              frames: int = 16, size: int = 32, fps: int = 8, event_prob: float = 0.5, seed: int = 0,
                              workers: int | None = None) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """Write the dataset under ``out`` (see the module docstring); returns ``{split: [(path, labels)]}``."""
    if not 1 <= classes <= len(EVENTS):
        raise ValueError(f"classes must be in [1, {len(EVENTS)}], got {classes}")
    if size % 4 or size < 16 or frames < 8 or not 0 < event_prob <= 1:
        raise ValueError("size must be a multiple of 4 and >= 16, frames >= 8, event_prob in (0, 1]")
    out = os.path.abspath(out)
    tasks, lists = [], {}
    for split, count, split_seed in (("train", train_videos, 0), ("val", val_videos, 1)):
        lists[split] = []
        for i in range(count):
            video_seed = int(np.random.SeedSequence([seed, split_seed, i]).generate_state(1)[0])
            events = draw_events(np.random.default_rng(video_seed), classes=classes, event_prob=event_prob)
            path = os.path.join(out, split, f"video_{i:05d}.mp4")
            tasks.append((path, events, video_seed, frames, size, fps))
            lists[split].append((path, tuple(sorted({e for e in events if e is not None}))))
    write_dataset(out, _job, tasks, lists, EVENTS[:classes], workers=workers)
    return lists
