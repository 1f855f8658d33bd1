"""``video-nl prepare-kinetics ROOT OUT``: lists (and optionally short-side re-encoding) for a Kinetics tree.

ROOT holds ``{train,val}/{class name}/*.mp4``. Labels are the alphabetical order of the class folders of
the first split (Kinetics-400: abseiling = 0, as ``data_lists/kinetics400/classnames.json``). Every video is
indexed (:mod:`video_nl.data.frame_index`, into ``OUT/frame_index``, where the loaders look by default);
unreadable ones are reported and left out of the lists. Writes ``OUT/{train,val,test}.csv`` (absolute paths,
``path label``; test = val) and ``OUT/classnames.json``. With ``--resize`` each video is
re-encoded with PyAV to short side ``--short-side`` (even sizes, H.264, audio dropped) under
``OUT/videos/{split}/{class}/`` in parallel processes; finished outputs are skipped, so a killed run resumes,
and outputs are written to a temporary file and renamed, so no half-written video is left.
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

from ..errors import UserError
from ..utils.io import atomic_json_dump, atomic_write
from .check import index_videos
from .encoding import write_video

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")


def scan(root: str, splits: list[str], *, underscores: bool = False) -> tuple[list[str], dict[str, list]]:
    """Class names (sorted folder names of the first split) and ``{split: [(path, class_name)]}``."""
    folders = {}
    for split in splits:
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            raise UserError(f"{split_dir} does not exist (expected ROOT/{{train,val}}/{{class name}}/*.mp4).")
        folders[split] = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
    classes = folders[splits[0]]
    videos = {split: [(os.path.join(root, split, c, f), c) for c in folders[split]
                      for f in sorted(os.listdir(os.path.join(root, split, c))) if f.lower().endswith(VIDEO_EXTENSIONS)]
              for split in splits}
    if underscores:
        classes = [c.replace(" ", "_") for c in classes]
        videos = {s: [(p, c.replace(" ", "_")) for p, c in v] for s, v in videos.items()}
    return classes, videos


def index_items(items: list[tuple], index_dir: str, workers: int, label: str) -> tuple[list[tuple], list[str]]:
    """Index the videos of ``items`` (tuples whose first element is the video's path) into ``index_dir`` in
    ``workers`` processes with a progress bar: the readable items, and ``"path: reason"`` lines for the others."""
    outcomes = index_videos([item[0] for item in items], index_dir=index_dir, workers=workers, progress=label)
    good = [item for item, o in zip(items, outcomes) if o.index is not None]
    return good, [f"{o.path}: {o.reason}" for o in outcomes if o.index is None]


def resize_video(src: str, dst: str, short_side: int) -> str:
    """Re-encode ``src`` to short side ``short_side`` at ``dst`` (skipped when ``dst`` exists); returns ``dst``."""
    import av

    if os.path.exists(dst):
        return dst
    with av.open(src) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 30)
        h, w = stream.height, stream.width
        scale = short_side / min(h, w)
        out_h, out_w = max(2, round(h * scale / 2) * 2), max(2, round(w * scale / 2) * 2)
        frames = (f.reformat(width=out_w, height=out_h, format="rgb24").to_ndarray(threads=1)
                  for f in container.decode(stream))
        write_video(dst, frames, fps=fps, crf=23)
    return dst


def _resize_job(job: tuple[str, str, int]) -> tuple[str, str]:
    """``(src, dst, short_side)`` → ``(dst, "")``, or ``(dst, reason)`` when re-encoding failed (for a process pool)."""
    src, dst, short_side = job
    try:
        return resize_video(src, dst, short_side), ""
    except Exception as e:  # report and keep going: one bad video must not stop a 300k-video job
        return dst, f"{type(e).__name__}: {str(e)[:200]}"


def resize_items(pool: ProcessPoolExecutor, items: list[tuple], destinations: list[str], *, short_side: int,
                 index_dir: str, workers: int, desc: str) -> tuple[list[tuple], list[str]]:
    """Re-encode the video of each item (its first element) to its destination in ``pool`` (progress bar), then
    index the outputs: the items re-encoded and readable, the destination now their first element, and
    ``"path: reason"`` lines for the others."""
    jobs = [(item[0], dst, short_side) for item, dst in zip(items, destinations)]
    results = list(tqdm(pool.map(_resize_job, jobs, chunksize=4), total=len(jobs), desc=f"resize {desc}",
                        unit="video"))
    failed = [f"{dst}: re-encoding failed: {r}" for dst, r in results if r]
    resized = [(dst, *item[1:]) for (dst, r), item in zip(results, items) if not r]
    good, unreadable = index_items(resized, index_dir, workers, f"index resized {desc}")
    return good, failed + unreadable


def prepare(root: str, out: str, *, splits: list[str], underscores: bool = False, resize: bool = False,
            short_side: int = 256, workers: int | None = None) -> dict[str, list[str]]:
    """Build the lists (see the module docstring); returns ``{split: [problem lines]}``."""
    classes, videos = scan(root, splits, underscores=underscores)
    ids = {c: i for i, c in enumerate(classes)}
    workers = workers or max(1, (os.cpu_count() or 2) - 1)
    index_dir = os.path.join(out, "frame_index")
    problems: dict[str, list[str]] = {}
    with ProcessPoolExecutor(workers) as pool:
        for split in splits:
            problems[split] = [f"{p}: class {c!r} is not a class of {splits[0]}" for p, c in videos[split] if c not in ids]
            items = [(p, c) for p, c in videos[split] if c in ids]
            good, bad = index_items(items, index_dir, workers, f"index {split}")
            problems[split] += bad
            if resize:
                destinations = [os.path.join(os.path.abspath(out), "videos", split, c,
                                             os.path.splitext(os.path.basename(p))[0] + ".mp4") for p, c in good]
                good, bad = resize_items(pool, good, destinations, short_side=short_side, index_dir=index_dir,
                                         workers=workers, desc=split)
                problems[split] += bad
            with atomic_write(os.path.join(out, f"{split}.csv"), "w") as f:
                f.writelines(f"{os.path.abspath(p)} {ids[c]}\n" for p, c in good)
    if "val" in splits:
        with open(os.path.join(out, "val.csv")) as src, atomic_write(os.path.join(out, "test.csv"), "w") as f:
            f.write(src.read())
    atomic_json_dump({c: i for i, c in enumerate(classes)}, os.path.join(out, "classnames.json"))
    return problems


def main(args: argparse.Namespace) -> int:
    """``video-nl prepare-kinetics ROOT OUT [--resize] [--underscores] ...``."""
    problems = prepare(args.root, args.out, splits=args.splits, underscores=args.underscores, resize=args.resize,
                       short_side=args.short_side, workers=args.workers)
    for split, lines in problems.items():
        for line in lines:
            print(f"[{split}] left out {line}")
    print(f"lists written to {os.path.abspath(args.out)}: " +
          ", ".join(f"{s}: {len(v)} problem(s)" for s, v in problems.items()))
    return 0
