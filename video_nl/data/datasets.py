"""Datasets and loaders: one random clip per video (train/val) and all test views of a video (test).

Reproducibility: every item draws its clip start, scale, crop and flip from one seed derived from
(``RNG_SEED``, epoch, video index, attempt), so results do not depend on worker count or order. The epoch
travels with each index (:class:`EpochSampler` yields ``(epoch, index)``), which keeps persistent workers
in step after ``loader.sampler.set_epoch(epoch)``. Val clips use epoch 0 every time (the same clips).

Failures: a train/val video that fails to decode is replaced by another (chosen from the item's seed) and
reported in the item's ``failures``; a test video comes back with ``ok=False`` and zero views. Each loader
carries ``loader.failures``, a :class:`FailureTracker` the engine feeds and checks (see docs/internals.md).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import UserError
from .decoding import DecodeError, decode_clip
from .frame_index import default_index_dir, hint_unindexed
from .lists import ListProblem, VideoEntry, configured_classnames, default_list_path, read_video_list
from .sampling import MultiClipSampler, TrainSampler
from .transforms import clip_transform, multi_view_transform, multi_view_scale

ALL_BAD_ODDS = 1e-6  # accepted chance that a list within DATA.MAX_FAILURE_RATIO exhausts a train item's attempts


def max_attempts(max_failure_ratio: float, num_videos: int) -> int:
    """Videos tried for one train item before giving up: enough that a list whose bad fraction is within
    ``max_failure_ratio`` runs out with probability below :data:`ALL_BAD_ODDS` (at least 10)."""
    if max_failure_ratio >= 1.0:
        return max(10, 20 * num_videos)
    if max_failure_ratio <= 0.0:
        return 10
    return max(10, math.ceil(math.log(ALL_BAD_ODDS) / math.log(max_failure_ratio)))


def item_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integers (e.g. RNG_SEED, epoch, index, attempt)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2, np.uint64)[0] >> 1)


class FailureTracker:
    """Unique failed videos (and dropped list lines) of one list; :meth:`check` stops when too many failed.

    Feed it every batch's ``failures`` (train/val) or every failed test item; in multi-rank runs gather
    :meth:`state` from all ranks and :meth:`merge` them before :meth:`check`.
    """

    def __init__(self, *, name: str, total: int, max_ratio: float, problems: Iterable[ListProblem] = ()):
        self.name, self.total, self.max_ratio = name, total, max_ratio
        self.failed: dict[str, str] = {f"{p.file}:{p.line_no}": p.reason for p in problems}

    def add(self, failures: Iterable[tuple[str, str]]) -> None:
        """Record ``(path, reason)`` pairs (repeats of a path count once)."""
        for path, reason in failures:
            self.failed.setdefault(path, reason)

    def state(self) -> dict[str, str]:
        """Picklable failures (path → reason), for gathering across ranks."""
        return dict(self.failed)

    def merge(self, state: dict[str, str]) -> None:
        """Add another rank's :meth:`state`."""
        self.add(state.items())

    @property
    def ratio(self) -> float:
        """Failed fraction of the list."""
        return len(self.failed) / max(self.total, 1)

    def check(self) -> None:
        """Raise :class:`UserError` naming examples when more than ``DATA.MAX_FAILURE_RATIO`` of the list failed."""
        if self.ratio > self.max_ratio:
            examples = "; ".join(f"{p}: {r}" for p, r in list(self.failed.items())[:5])
            raise UserError(f"{len(self.failed)} of {self.total} videos of the {self.name} list failed "
                            f"({self.ratio:.0%} > DATA.MAX_FAILURE_RATIO {self.max_ratio:.0%}). Examples: {examples}. "
                            f"Check the paths (DATA.PATH_PREFIX) and the files (`video-nl check-videos LIST` "
                            f"checks every video).")


def read_split(cfg: Any, split: str) -> tuple[str, list[VideoEntry], list[ListProblem]]:
    """The list file of ``split`` (``DATA.{SPLIT}_LIST`` or found in ``DATA.PATH_TO_DATA_DIR``) and its entries."""
    data = cfg.DATA
    path = getattr(data, f"{split.upper()}_LIST") or default_list_path(data.PATH_TO_DATA_DIR, split)
    entries, problems = read_video_list(path, fmt=data.LIST_FORMAT, separator=data.PATH_LABEL_SEPARATOR,
                                        prefix=data.PATH_PREFIX, num_classes=cfg.MODEL.NUM_CLASSES,
                                        classnames=configured_classnames(data, data.PATH_TO_DATA_DIR),
                                        multi_label=data.MULTI_LABEL)
    return path, entries, problems


class _ListDataset(Dataset):
    """Reads the list of ``split`` (or takes ``source``: a list path, its entries and dropped lines) and keeps
    the config values items need (picklable for workers)."""

    def __init__(self, cfg: Any, split: str, *,
                 source: tuple[str, list[VideoEntry], list[ListProblem]] | None = None):
        self.split = split
        self.list_path, self.entries, self.problems = source if source is not None else read_split(cfg, split)
        data = cfg.DATA
        self.num_frames, self.rate, self.target_fps = data.NUM_FRAMES, data.SAMPLING_RATE, data.TARGET_FPS
        self.protocol = data.SAMPLING_PROTOCOL
        self.decode = dict(backend=data.DECODING_BACKEND, threads=data.DECODE_THREADS, timeout_s=data.DECODE_TIMEOUT_S,
                           index_dir=data.FRAME_INDEX_DIR or default_index_dir(self.list_path))
        hint_unindexed([e.path for e in self.entries[:: max(len(self.entries) // 16, 1)]], self.decode["index_dir"],
                       self.list_path)
        self.mean, self.std = list(data.MEAN), list(data.STD)
        self.seed = cfg.RNG_SEED
        self.num_classes, self.multi_label = cfg.MODEL.NUM_CLASSES, data.MULTI_LABEL

    def __len__(self) -> int:
        return len(self.entries)

    def target(self, entry: VideoEntry) -> int | torch.Tensor:
        """The training target of ``entry``: its class id, or a float multi-hot ``K`` vector (multi-label)."""
        if not self.multi_label:
            return entry.label
        target = torch.zeros(self.num_classes)
        target[list(entry.labels)] = 1.0
        return target

    def failure_tracker(self, max_ratio: float) -> FailureTracker:
        """A tracker for this list, already holding its dropped lines."""
        return FailureTracker(name=f"{self.split} ({self.list_path})", total=len(self.entries) + len(self.problems),
                              max_ratio=max_ratio, problems=self.problems)


class VideoClipDataset(_ListDataset):
    """Train/val: one clip per video. Item (key ``index`` or ``(epoch, index)``):
    ``video`` float ``3×T×crop×crop``, ``label`` int (multi-label: float multi-hot ``K``, see :meth:`target`),
    ``index`` int (of the video used), ``failures``
    list of ``(path, reason)`` of videos that failed before it."""

    def __init__(self, cfg: Any, split: str = "train"):
        super().__init__(cfg, split)
        data = cfg.DATA
        self.jitter, self.crop = list(data.TRAIN_JITTER_SCALES), data.TRAIN_CROP_SIZE
        self.flip = data.RANDOM_FLIP
        self.max_attempts = max_attempts(data.MAX_FAILURE_RATIO, len(self.entries))
        # index -> reason of videos this process already failed to decode: a replacement candidate known to be
        # bad is passed over without decoding it again (the candidate sequence is seeded, so the outcome is the
        # same as re-decoding it, only faster; it was reported when it first failed)
        self.known_bad: dict[int, str] = {}

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        epoch = epoch if self.split == "train" else 0
        failures: list[tuple[str, str]] = []
        current = index
        for attempt in range(self.max_attempts):
            entry, seed = self.entries[current], item_seed(self.seed, epoch, index, attempt)
            if current in self.known_bad and attempt > 0:
                current = int(np.random.default_rng(seed).integers(len(self.entries)))
                continue
            try:
                sampler = TrainSampler(self.num_frames, self.rate, self.target_fps, seed, self.protocol)
                result = decode_clip(entry.path, sampler, **self.decode)
            except DecodeError as e:
                failures.append((entry.path, e.reason))
                self.known_bad[current] = e.reason
                current = int(np.random.default_rng(seed).integers(len(self.entries)))
                continue
            video = clip_transform(torch.from_numpy(result.frames), protocol=self.protocol, seed=seed,
                                   jitter_scales=self.jitter, crop_size=self.crop, flip=self.flip, mean=self.mean,
                                   std=self.std)
            return {"video": video, "label": self.target(entry), "index": current, "failures": failures}
        examples = "; ".join(f"{p}: {r}" for p, r in failures[:3])
        raise UserError(f"{self.max_attempts} videos in a row failed to decode in the {self.split} list "
                        f"{self.list_path}. Examples: {examples}.")


class MultiViewDataset(_ListDataset):
    """Test: every view of a video. Item: ``views`` float ``V×3×T×c×c`` (V = clips × crops, clip-major),
    ``label`` (multi-label: the list of the video's classes), ``index``, ``path``, ``ok`` and ``failure``
    (reason, or ""). A failed video has ``ok=False``
    and ``V = 0``. With ``decode_once`` the union of all clips' frames is decoded in one pass."""

    def __init__(self, cfg: Any, split: str = "test", *, decode_once: bool | None = None,
                 source: tuple[str, list[VideoEntry], list[ListProblem]] | None = None):
        super().__init__(cfg, split, source=source)
        self.crop, self.num_crops = cfg.DATA.TEST_CROP_SIZE, cfg.TEST.NUM_SPATIAL_CROPS
        self.sampler = MultiClipSampler(self.num_frames, self.rate, self.target_fps, cfg.TEST.NUM_ENSEMBLE_VIEWS,
                                        cfg.DATA.TEST_OFFSET_FORMULA, protocol=self.protocol)
        self.scale = multi_view_scale(protocol=self.protocol, num_crops=self.num_crops, crop_size=self.crop,
                                      jitter_scales=cfg.DATA.TRAIN_JITTER_SCALES)
        self.decode_once = cfg.TEST.DECODE_ONCE if decode_once is None else decode_once

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index = key[1] if isinstance(key, tuple) else key
        entry = self.entries[index]
        label = list(entry.labels) if self.multi_label else entry.label
        item = {"label": label, "index": index, "path": entry.path, "ok": True, "failure": ""}
        try:
            item["views"] = self._views_once(entry.path) if self.decode_once else self._views_per_view(entry.path)
        except DecodeError as e:
            item.update(views=torch.zeros(0, 3, self.num_frames, self.crop, self.crop), ok=False, failure=e.reason)
        return item

    def _transform(self, frames: torch.Tensor) -> torch.Tensor:
        return multi_view_transform(frames, crop_size=self.crop, num_crops=self.num_crops, mean=self.mean,
                                    std=self.std, scale=self.scale, protocol=self.protocol)

    def _views_once(self, path: str) -> torch.Tensor:
        result = decode_clip(path, self.sampler, **self.decode)
        frames = torch.from_numpy(result.frames)
        return self._transform(frames.view(self.sampler.num_clips, self.num_frames, *frames.shape[1:]))

    def _views_per_view(self, path: str) -> torch.Tensor:
        """Decode each view's clip separately (as PySlowFast does); the reference for the decode-once path."""
        views = []
        for v in range(self.sampler.num_clips * self.num_crops):
            clip_sampler = dataclasses.replace(self.sampler, only_clip=v // self.num_crops)
            frames = torch.from_numpy(decode_clip(path, clip_sampler, **self.decode).frames)
            views.append(self._transform(frames)[v % self.num_crops])
        return torch.stack(views)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)``: shuffled by ``seed + epoch`` (or in order), sharded ``rank::world_size``.

    ``pad=True`` repeats indices so every rank gets the same count (DistributedSampler semantics, for
    training); ``pad=False`` gives every index exactly once across ranks (for testing).
    """

    def __init__(self, size: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1,
                 pad: bool = True):
        self.size, self.shuffle, self.seed, self.pad = size, shuffle, seed, pad
        self.rank, self.world_size, self.epoch, self.start = rank, world_size, 0, 0

    def set_epoch(self, epoch: int, *, start: int = 0) -> None:
        """Select the shuffle and the augmentation seeds of ``epoch`` (call before iterating); ``start`` skips
        this rank's first ``start`` samples of the epoch (mid-epoch resume) without loading them."""
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(item_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.pad and self.size % self.world_size:
            order += order[: self.world_size - self.size % self.world_size]
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, i) for i in self._order()[self.start:]])

    def __len__(self) -> int:
        if self.pad:
            return -(-self.size // self.world_size)
        return len(range(self.rank, self.size, self.world_size))


def collate_clips(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``video`` (``B×3×T×H×W``), ``label`` (LongTensor[B], or ``B×K`` multi-hot) and ``index``
    (LongTensor[B]); concatenate ``failures``."""
    labels = [b["label"] for b in batch]
    return {"video": torch.stack([b["video"] for b in batch]),
            "label": torch.stack(labels) if torch.is_tensor(labels[0]) else torch.tensor(labels, dtype=torch.long),
            "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
            "failures": [f for b in batch for f in b["failures"]]}


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode and resize; intra-op threads would oversubscribe the cores


def _rank_world(distributed: bool) -> tuple[int, int]:
    if not distributed:
        return 0, 1
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise UserError("distributed=True needs an initialised torch.distributed process group.")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def _loader(cfg: Any, dataset: Dataset, sampler: EpochSampler, **kwargs: Any) -> DataLoader:
    workers = cfg.DATA_LOADER.NUM_WORKERS
    extra = {"persistent_workers": cfg.DATA_LOADER.PERSISTENT_WORKERS,
             "prefetch_factor": cfg.DATA_LOADER.PREFETCH_FACTOR} if workers > 0 else {}
    loader = DataLoader(dataset, sampler=sampler, num_workers=workers, worker_init_fn=_worker_init,
                        pin_memory=cfg.DATA_LOADER.PIN_MEMORY and torch.cuda.is_available(), **extra, **kwargs)
    loader.failures = dataset.failure_tracker(cfg.DATA.MAX_FAILURE_RATIO)
    loader.failures.check()  # a list that is mostly malformed lines stops here
    return loader


def build_train_loader(cfg: Any, split: str = "train", *, distributed: bool = False) -> DataLoader:
    """Loader of ``split`` ("train": shuffled, drop_last; "val": in order, fixed clips) with batches from
    :func:`collate_clips` of ``TRAIN.BATCH_SIZE // world_size`` clips per rank (TRAIN.BATCH_SIZE is global).

    Call ``loader.sampler.set_epoch(epoch)`` before each epoch; feed ``batch["failures"]`` to
    ``loader.failures`` (:class:`FailureTracker`).
    """
    rank, world = _rank_world(distributed)
    if cfg.TRAIN.BATCH_SIZE % world:
        raise UserError(f"TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} (global) must be divisible by the world size {world}.")
    dataset = VideoClipDataset(cfg, split)
    train = split == "train"
    sampler = EpochSampler(len(dataset), shuffle=train, seed=cfg.RNG_SEED, rank=rank, world_size=world, pad=train)
    return _loader(cfg, dataset, sampler, batch_size=cfg.TRAIN.BATCH_SIZE // world, collate_fn=collate_clips,
                   drop_last=train and len(sampler) >= cfg.TRAIN.BATCH_SIZE // world)


def build_test_loader(cfg: Any, split: str = "test", *, distributed: bool = False) -> DataLoader:
    """Loader yielding one :class:`MultiViewDataset` item per step (all views of one video, unbatched;
    the tester splits ``views`` into forward batches). Each video is on exactly one rank (``rank::world``)."""
    rank, world = _rank_world(distributed)
    dataset = MultiViewDataset(cfg, split)
    sampler = EpochSampler(len(dataset), shuffle=False, seed=cfg.RNG_SEED, rank=rank, world_size=world, pad=False)
    return _loader(cfg, dataset, sampler, batch_size=None)


def build_view_loader(cfg: Any, dataset: MultiViewDataset, indices: Sequence[int]) -> DataLoader:
    """Loader yielding the :class:`MultiViewDataset` items of ``indices``, in that order (one video per step)."""
    return _loader(cfg, dataset, list(indices), batch_size=None)
