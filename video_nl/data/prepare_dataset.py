"""``video-nl prepare-dataset {kinetics,ucf101,hmdb51,ssv2,charades} ROOT OUT [--split N] [--resize]``.

From an official download (ROOT: the archives unpacked side by side as distributed, see
:mod:`video_nl.data.official_lists`) to lists video_nl trains on: ``OUT/{train,val,test}.csv`` (absolute
paths; ``path label``, or ``path l1,l2,...`` for Charades — ``DATA.MULTI_LABEL``; val = test where the
dataset has no separate validation split), ``OUT/classnames.json`` (the official class order, labels
0-based) and ``OUT/prepare_report.json`` (per split: listed, written, missing and unreadable videos, and
the annotation lines that could not be used). Every listed video is located (exact path; else the same
name ignoring case, or the same stem with another video extension, e.g. a re-encoded copy) and indexed
(:mod:`video_nl.data.frame_index`, into ``OUT/frame_index``, where the loaders look by default: true frame counts
and exact routing, so the AVIs of UCF101/HMDB51 decode frame-exactly); missing and unreadable ones are reported
and left out of the lists. With ``--resize`` each video is
re-encoded to short side ``--short-side`` under ``OUT/videos/<its relative path>.mp4`` (resumable, as
``prepare-kinetics``). ``kinetics`` is ``video-nl prepare-kinetics`` (same arguments).
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

from ..utils.io import atomic_json_dump, atomic_write
from .lists import list_line
from .official_lists import READERS, Labels, OfficialDataset
from .prepare import VIDEO_EXTENSIONS, index_items, resize_items

DATASETS = ("kinetics", *READERS)


class VideoFinder:
    """Locates a listed video (path relative to ``root``): the exact path; else, folder by folder, the same
    name ignoring case (UCF101's ``HandstandPushups`` vs ``HandStandPushups``); else a file of the same stem
    with a video extension. Each folder is listed once."""

    def __init__(self, root: str):
        self.root = root
        self._listings: dict[str, dict[str, str]] = {}

    def _listing(self, folder: str) -> dict[str, str]:
        """Lower-cased name → name, plus lower-cased stem → name for video files, of ``folder``."""
        if folder not in self._listings:
            names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
            listing = {os.path.splitext(n)[0].lower(): n for n in names if n.lower().endswith(VIDEO_EXTENSIONS)}
            listing.update({n.lower(): n for n in names})
            self._listings[folder] = listing
        return self._listings[folder]

    def find(self, relative: str) -> str | None:
        """The file's path, or None when it is not there."""
        exact = os.path.join(self.root, relative)
        if os.path.isfile(exact):
            return exact
        folder = self.root
        parts = [p for p in relative.replace("\\", "/").split("/") if p]
        for i, part in enumerate(parts):
            listing = self._listing(folder)
            last = i == len(parts) - 1
            name = listing.get(part.lower()) or (listing.get(os.path.splitext(part)[0].lower()) if last else None)
            if name is None:
                return None
            folder = os.path.join(folder, name)
        return folder if os.path.isfile(folder) else None


def _split_groups(dataset: OfficialDataset) -> list[tuple[list[str], list[tuple[str, Labels]]]]:
    """``([split names], videos)`` with splits that share one list (val = test) grouped, so each video is
    located, indexed and re-encoded once."""
    groups: list[tuple[list[str], list[tuple[str, Labels]]]] = []
    for name, videos in dataset.splits.items():
        same = next((g for g in groups if g[1] is videos), None)
        if same:
            same[0].append(name)
        else:
            groups.append(([name], videos))
    return groups


def prepare_official(dataset: OfficialDataset, out: str, *, resize: bool = False, short_side: int = 256,
                     workers: int | None = None) -> dict:
    """Locate, index (and re-encode) the videos of ``dataset``, write the lists, classnames.json and
    prepare_report.json under ``out``; returns the report."""
    finder = VideoFinder(dataset.video_dir)
    out = os.path.abspath(out)
    report: dict = {"dataset": dataset.name, "root_videos": os.path.abspath(dataset.video_dir),
                    "num_classes": len(dataset.classes), "multi_label": dataset.multi_label,
                    "annotation_problems": dataset.problems, "splits": {}}
    workers = workers or max(1, (os.cpu_count() or 2) - 1)
    index_dir = os.path.join(out, "frame_index")
    with ProcessPoolExecutor(workers) as pool:
        for names, videos in _split_groups(dataset):
            desc = "/".join(names)
            located = [(finder.find(rel), rel, labels) for rel, labels in tqdm(videos, desc=f"locate {desc}",
                                                                                unit="video")]
            missing = [f"{rel}: missing (not under {dataset.video_dir})" for path, rel, _ in located if path is None]
            found = [(path, rel, labels) for path, rel, labels in located if path is not None]
            good, unreadable = index_items(found, index_dir, workers, f"index {desc}")
            if resize:
                destinations = [os.path.join(out, "videos", os.path.splitext(rel)[0] + ".mp4") for _, rel, _ in good]
                good, bad = resize_items(pool, good, destinations, short_side=short_side, index_dir=index_dir,
                                         workers=workers, desc=desc)
                unreadable += bad
            for name in names:
                with atomic_write(os.path.join(out, f"{name}.csv"), "w") as f:
                    f.writelines(list_line(os.path.abspath(path), labels) for path, _, labels in good)
                report["splits"][name] = {"listed": len(videos), "written": len(good), "missing": missing,
                                          "unreadable": unreadable}
    classes = dataset.classes
    unique = len(set(classes)) == len(classes)
    atomic_json_dump({c: i for i, c in enumerate(classes)} if unique else classes, os.path.join(out, "classnames.json"))
    atomic_json_dump(report, os.path.join(out, "prepare_report.json"))
    return report


def main(args: argparse.Namespace) -> int:
    """``video-nl prepare-dataset DATASET ROOT OUT [--split N] [--resize] ...``."""
    if args.dataset == "kinetics":
        from .prepare import main as prepare_kinetics

        return prepare_kinetics(args)
    dataset = READERS[args.dataset](args.root, split=args.split, video_dir=args.videos)
    report = prepare_official(dataset, args.out, resize=args.resize, short_side=args.short_side,
                              workers=args.workers)
    for line in report["annotation_problems"]:
        print(f"[annotations] skipped {line}")
    for split, r in report["splits"].items():
        for line in r["missing"] + r["unreadable"]:
            print(f"[{split}] left out {line}")
    counts = ", ".join(f"{s}: {r['written']}/{r['listed']} videos" for s, r in report["splits"].items())
    extra = " DATA.MULTI_LABEL True" if dataset.multi_label else ""
    print(f"{args.dataset}: {len(dataset.classes)} classes; lists written to {os.path.abspath(args.out)} ({counts}); "
          f"train with DATA.PATH_TO_DATA_DIR {os.path.abspath(args.out)} MODEL.NUM_CLASSES "
          f"{len(dataset.classes)}{extra}")
    return 0
