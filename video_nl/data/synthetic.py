"""A synthetic spacetime-relation dataset: real H.264 mp4s that only a temporal model can classify.

Classes come in **time-reversed pairs**: class 2p+1 is, by construction, class 2p played backwards
(``render(2p + 1, seed) == render(2p, seed)[::-1]``). Every frame of a video therefore has the same
appearance distribution in both classes of a pair, so a frame-level model (C2D averages per-frame
features; it is exactly invariant to reversing an even-length clip) sits at ~50% within each pair, while
a model that relates frames across time (I3D, non-local) can reach ~100%. Pairs (all flip-invariant):

0/1 ``move_down`` / ``move_up``: a square travels vertically across the frame.
2/3 ``top_then_bottom`` / ``bottom_then_top``: two far-apart discs (top and bottom rows) light up one after
    the other (a long-range spacetime relation).
4/5 ``grow`` / ``shrink``: a square grows (shrinks) about its centre.
6/7 ``change_early`` / ``change_late``: an object switches between two colours early (late); the colour
    order is random, so "red→blue early" reversed is "blue→red late".

Per video, background, object colours, sizes and positions are random. Layout: ``OUT/{train,val}/{class}/
{class}_{i:04d}.mp4`` plus ``train.csv``, ``val.csv``, ``test.csv`` (the val videos; absolute paths) and
``classnames.json``; point ``DATA.PATH_TO_DATA_DIR`` at OUT. Same seed → bit-identical files.

Recommended config for the defaults (16 frames of 32×32 at 8 fps): ``MODEL.NUM_CLASSES 8``,
``DATA.NUM_FRAMES 8``, ``DATA.SAMPLING_RATE 2`` (a clip spans 15 of the 16 frames, so it always sees the
whole relation), ``DATA.TRAIN_JITTER_SCALES [32, 36]``, ``DATA.TRAIN_CROP_SIZE 32``, ``DATA.TEST_CROP_SIZE 32``,
``DATA.RANDOM_FLIP False`` (not required, the classes are flip-invariant), ``TEST.NUM_ENSEMBLE_VIEWS 2``,
``TEST.NUM_SPATIAL_CROPS 1``, ``DATA.MEAN [0.45, 0.45, 0.45]``, ``DATA.STD [0.225, 0.225, 0.225]``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from ..utils.io import atomic_json_dump, atomic_write
from .encoding import write_video
from .lists import list_line

PAIRS = (("move_down", "move_up"), ("top_then_bottom", "bottom_then_top"), ("grow", "shrink"),
         ("change_early", "change_late"))
CLASSNAMES = tuple(name for pair in PAIRS for name in pair)
DEFAULTS = dict(classes=8, train_per_class=40, val_per_class=10, frames=16, size=32, fps=8)
PALETTE = np.array([[230, 40, 40], [40, 90, 240], [40, 210, 60], [240, 220, 40], [230, 60, 220], [40, 220, 230],
                    [250, 250, 250], [250, 140, 30]], dtype=np.uint8)


def _canvas(rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
    background = rng.integers(0, 70, size=3, dtype=np.uint8)
    return np.broadcast_to(background, (frames, size, size, 3)).copy()


def _square(image: np.ndarray, cy: float, cx: float, side: float, colour: np.ndarray) -> None:
    half = side / 2
    y0, y1 = int(round(cy - half)), int(round(cy + half))
    x0, x1 = int(round(cx - half)), int(round(cx + half))
    image[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = colour


def _disc(image: np.ndarray, cy: float, cx: float, radius: float, colour: np.ndarray) -> None:
    yy, xx = np.ogrid[: image.shape[0], : image.shape[1]]
    image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = colour


def _colours(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    return [PALETTE[i] for i in rng.choice(len(PALETTE), size=count, replace=False)]


def _move_down(rng: np.random.Generator, t: int, s: int) -> np.ndarray:
    video, (colour,) = _canvas(rng, t, s), _colours(rng, 1)
    side = rng.uniform(0.22, 0.3) * s
    cx = rng.uniform(0.3, 0.7) * s
    ys = np.linspace(0.12 * s + side / 2, 0.88 * s - side / 2, t)
    for i in range(t):
        _square(video[i], ys[i], cx, side, colour)
    return video


def _top_then_bottom(rng: np.random.Generator, t: int, s: int) -> np.ndarray:
    video, (on, off) = _canvas(rng, t, s), _colours(rng, 2)
    off = (off // 3).astype(np.uint8)  # an unlit disc keeps a dim version of another colour
    radius = rng.uniform(0.12, 0.16) * s
    top = (0.2 * s, rng.uniform(0.25, 0.75) * s)
    bottom = (0.8 * s, rng.uniform(0.25, 0.75) * s)
    length = max(t // 4, 2)
    first = int(rng.integers(1, max(t // 2 - length, 1) + 1))
    second = int(rng.integers(first + length, t - length + 1))
    for i in range(t):
        _disc(video[i], *top, radius, on if first <= i < first + length else off)
        _disc(video[i], *bottom, radius, on if second <= i < second + length else off)
    return video


def _grow(rng: np.random.Generator, t: int, s: int) -> np.ndarray:
    video, (colour,) = _canvas(rng, t, s), _colours(rng, 1)
    cy, cx = rng.uniform(0.4, 0.6, size=2) * s
    sides = np.linspace(0.12 * s, 0.6 * s, t)
    for i in range(t):
        _square(video[i], cy, cx, sides[i], colour)
    return video


def _change_early(rng: np.random.Generator, t: int, s: int) -> np.ndarray:
    video, (first, second) = _canvas(rng, t, s), _colours(rng, 2)
    cy, cx = rng.uniform(0.4, 0.6, size=2) * s
    side = rng.uniform(0.35, 0.5) * s
    change = int(round(t * 0.25)) + int(rng.integers(-1, 2))  # first frame with the second colour
    for i in range(t):
        _square(video[i], cy, cx, side, first if i < change else second)
    return video


RENDERERS: tuple[Callable[[np.random.Generator, int, int], np.ndarray], ...] = (
    _move_down, _top_then_bottom, _grow, _change_early)


def render(label: int, seed: int, *, frames: int = 16, size: int = 32) -> np.ndarray:
    """Frames (uint8 ``frames×size×size×3``) of one video of class ``label``; odd classes are the even
    class of their pair rendered from the same seed and reversed in time."""
    video = RENDERERS[label // 2](np.random.default_rng(seed), frames, size)
    return np.ascontiguousarray(video[::-1]) if label % 2 else video


def _job(task: tuple[str, int, int, int, int, int]) -> str:
    path, label, seed, frames, size, fps = task
    write_video(path, render(label, seed, frames=frames, size=size), fps=fps)
    return path


def make_synthetic(out: str, *, classes: int = 8, train_per_class: int = 40, val_per_class: int = 10,
                   frames: int = 16, size: int = 32, fps: int = 8, seed: int = 0,
                   workers: int | None = None) -> dict[str, list[tuple[str, int]]]:
    """Write the dataset under ``out`` (see the module docstring); returns ``{split: [(path, label)]}``."""
    if not 2 <= classes <= len(CLASSNAMES) or classes % 2:
        raise ValueError(f"classes must be an even number in [2, {len(CLASSNAMES)}], got {classes}")
    if size % 2 or size < 16 or frames < 8:
        raise ValueError("size must be even and >= 16, frames >= 8")
    out = os.path.abspath(out)
    split_seed = {"train": 0, "val": 1}
    tasks, lists = [], {}
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        lists[split] = []
        for label in range(classes):
            name = CLASSNAMES[label]
            for i in range(per_class):
                path = os.path.join(out, split, name, f"{name}_{i:04d}.mp4")
                video_seed = int(np.random.SeedSequence([seed, split_seed[split], label, i]).generate_state(1)[0])
                tasks.append((path, label, video_seed, frames, size, fps))
                lists[split].append((path, label))
    write_dataset(out, _job, tasks, lists, CLASSNAMES[:classes], workers=workers)
    return lists


def write_dataset(out: str, job: Callable[[Any], str], tasks: list, lists: dict[str, list[tuple[str, Any]]],
                  classnames: Sequence[str], *, workers: int | None) -> None:
    """Run ``job`` (encode one video) on every task in ``workers`` processes, then write ``train.csv``,
    ``val.csv``, ``test.csv`` (the val videos) from ``lists`` (``(path, label or labels)``) and classnames.json."""
    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(job, tasks, chunksize=8))
    else:
        for task in tasks:
            job(task)
    for split, name in (("train", "train"), ("val", "val"), ("val", "test")):
        with atomic_write(os.path.join(out, f"{name}.csv"), "w") as f:
            f.writelines(list_line(path, labels) for path, labels in lists[split])
    atomic_json_dump({name: i for i, name in enumerate(classnames)}, os.path.join(out, "classnames.json"))
