"""Video lists (PySlowFast csv, MMAction2 ``*_list_videos.txt``, Caffe2 ``trainlist.txt``) and class names.

Every format is one video per line, ``<path><sep><label>``: the label is the *last* field, so paths may
contain the separator (a space for MMAction2/Caffe2, ``DATA.PATH_LABEL_SEPARATOR`` for csv). A label may
also be a class name when class names are known. Malformed lines and labels outside ``[0, num_classes)``
are not fatal: they come back as :class:`ListProblem` (line number + reason) and count as failures.

Multi-label lists (``DATA.MULTI_LABEL``): ``<path><sep>l1,l2,...`` (PySlowFast's Charades form) or
``<path> l1 l2 ...`` (MMAction2's ``multi_class`` form); a line with the path alone is a video with no label
(all classes negative). With a space separator the label fields are read from the right for as long as
they parse as labels, and the first field always belongs to the path.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

FORMATS = ("csv", "mmaction2", "caffe2")
_NUMERIC_LABELS = re.compile(r"-?\d+(,-?\d+)*,?")


@dataclass(frozen=True)
class VideoEntry:
    """One video of a list: full path (prefix applied) and integer label; in multi-label lists ``label`` is
    -1 and ``labels`` holds the video's classes (sorted, possibly none)."""

    path: str
    label: int
    labels: tuple[int, ...] = ()


@dataclass(frozen=True)
class ListProblem:
    """A dropped list line: file, 1-based line number, the line and why it was dropped."""

    file: str
    line_no: int
    line: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line_no}: {self.reason}: {self.line[:120]!r}"


def detect_format(path: str) -> str:
    """List format from the file name: ``*.csv`` → csv, ``*_list_videos.txt`` → mmaction2,
    ``trainlist.txt``/``vallist.txt``/``testlist.txt`` → caffe2, anything else → csv."""
    name = os.path.basename(path)
    if name.endswith("_list_videos.txt"):
        return "mmaction2"
    if name in ("trainlist.txt", "vallist.txt", "testlist.txt"):
        return "caffe2"
    return "csv"


def default_list_path(data_dir: str, split: str) -> str:
    """The first existing of ``{split}.csv``, ``*{split}_list_videos.txt``, ``{split}list.txt`` in ``data_dir``
    (``{split}.csv`` when none exists, so the error names the PySlowFast file)."""
    candidates = [os.path.join(data_dir, f"{split}.csv")]
    if os.path.isdir(data_dir):
        candidates += sorted(os.path.join(data_dir, n) for n in os.listdir(data_dir)
                             if n.endswith(f"{split}_list_videos.txt"))
    candidates.append(os.path.join(data_dir, f"{split}list.txt"))
    return next((c for c in candidates if os.path.isfile(c)), candidates[0])


def load_classnames(path: str) -> list[str]:
    """Class names ordered by id, from json (``{name: id}`` or a list) or txt (one name per line)."""
    if not os.path.isfile(path):
        raise UserError(f"Class names file {path} does not exist.")
    with open(path, encoding="utf-8") as f:
        if path.endswith(".json"):
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise UserError(f"Class names file {path} is not valid JSON: {e}.") from None
            if isinstance(data, list):
                return [str(n) for n in data]
            if not isinstance(data, dict) or sorted(data.values()) != list(range(len(data))):
                raise UserError(f"Class names file {path} must map each name to a distinct id 0..K-1.")
            return sorted(data, key=data.get)
        return [line.strip() for line in f if line.strip()]


def configured_classnames(data: Any, folder: str) -> list[str] | None:
    """Names from ``DATA.CLASSNAMES_FILE`` (``data`` is ``cfg.DATA``; an error if it is missing), else from
    ``folder/classnames.json`` when there is one, else None."""
    path = data.CLASSNAMES_FILE or os.path.join(folder, "classnames.json")
    return load_classnames(path) if data.CLASSNAMES_FILE or os.path.isfile(path) else None


def class_names(cfg: Any) -> list[str]:
    """Names from ``DATA.CLASSNAMES_FILE`` or ``PATH_TO_DATA_DIR/classnames.json``, else ``"0".."K-1"``."""
    names = configured_classnames(cfg.DATA, cfg.DATA.PATH_TO_DATA_DIR) or []
    return names if len(names) == cfg.MODEL.NUM_CLASSES else [str(i) for i in range(cfg.MODEL.NUM_CLASSES)]


def list_line(path: str, labels: int | tuple[int, ...] | list[int]) -> str:
    """One list line (newline included): ``path label``, or ``path l1,l2,...`` for a multi-label video
    (PySlowFast's Charades form; the path alone when it has no label)."""
    if isinstance(labels, int):
        return f"{path} {labels}\n"
    return f"{path} {','.join(str(c) for c in labels)}".rstrip() + "\n"


def class_counts(entries: list[VideoEntry], num_classes: int) -> list[int]:
    """Videos per class (a multi-label video counts once for each of its classes)."""
    counts = [0] * num_classes
    for e in entries:
        for c in (e.labels if e.label < 0 else (e.label,)):
            counts[c] += 1
    return counts


def read_video_list(path: str, *, fmt: str = "auto", separator: str = " ", prefix: str = "",
                    num_classes: int | None = None, classnames: list[str] | None = None,
                    labels_optional: bool = False,
                    multi_label: bool = False) -> tuple[list[VideoEntry], list[ListProblem]]:
    """Read a video list; returns the valid entries and the dropped lines.

    Args:
        fmt: ``auto`` (by file name, :func:`detect_format`), ``csv``, ``mmaction2`` or ``caffe2``.
        separator: path/label separator of csv lists (mmaction2 and caffe2 lists use a space).
        prefix: joined in front of every path (``DATA.PATH_PREFIX``; MMAction2's ``data_prefix``).
        num_classes: labels must lie in ``[0, num_classes)`` when given.
        classnames: lets a label field be a class name.
        labels_optional: a line whose last field is not a label is one path with label -1 (unlabelled lists).
        multi_label: read several (or no) labels per video (see the module docstring).
    Raises:
        UserError: the list file does not exist or holds no valid line, or is a frame list (PySlowFast's
            Charades frame-list csv, which names frames, not videos).
    """
    if not os.path.isfile(path):
        raise UserError(f"Video list {path} does not exist (set DATA.PATH_TO_DATA_DIR or DATA.*_LIST).")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise UserError(f"Unknown list format {fmt!r}; one of auto, {', '.join(FORMATS)}.")
    sep = separator if fmt == "csv" else " "
    ids = {name: i for i, name in enumerate(classnames or [])}
    entries, problems = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("original_vido_id"):
                raise UserError(f"{path} is a PySlowFast frame list (header {line[:60]!r}); video_nl reads videos: "
                                f"list one video per line (`video-nl prepare-dataset charades` writes such lists).")
            parse = _parse_multi if multi_label else _parse
            entry, reason = parse(line, sep, prefix, ids, num_classes)
            if entry is None and labels_optional:
                entry = VideoEntry(os.path.join(prefix, line) if prefix else line, -1)
            if entry is None:
                problems.append(ListProblem(path, line_no, line, reason))
            else:
                entries.append(entry)
    if not entries:
        detail = f" First problem: {problems[0]}." if problems else ""
        raise UserError(f"Video list {path} ({fmt} format) has no valid line.{detail}")
    return entries, problems


def _parse(line: str, sep: str, prefix: str, ids: dict[str, int],
           num_classes: int | None) -> tuple[VideoEntry | None, str]:
    parts = line.rsplit(sep, 1) if sep.strip() else line.rsplit(None, 1)
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        return None, "expected '<path><separator><label>'"
    video, label_text = parts[0].strip(), parts[1].strip()
    label, reason = _label(label_text, ids, num_classes)
    if label is None:
        return None, reason
    return VideoEntry(os.path.join(prefix, video) if prefix else video, label), ""


def _label(text: str, ids: dict[str, int], num_classes: int | None) -> tuple[int | None, str]:
    """The class id of one label field (an integer or a known class name), or None and the reason."""
    if text.lstrip("-").isdigit():
        label = int(text)
    elif text in ids:
        label = ids[text]
    else:
        return None, f"label {text!r} is not an integer{' or a known class name' if ids else ''}"
    if label < 0 or (num_classes is not None and label >= num_classes):
        return None, f"label {label} outside [0, {num_classes}) (MODEL.NUM_CLASSES)"
    return label, ""


def _labels(text: str, ids: dict[str, int], num_classes: int | None) -> tuple[list[int] | None, str]:
    """The class ids of a comma- and/or space-separated label field (empty → none)."""
    labels = []
    for part in text.replace(",", " ").split():
        label, reason = _label(part, ids, num_classes)
        if label is None:
            return None, reason
        labels.append(label)
    return labels, ""


def _parse_multi(line: str, sep: str, prefix: str, ids: dict[str, int],
                 num_classes: int | None) -> tuple[VideoEntry | None, str]:
    labels: list[int] = []
    if sep.strip():  # path<sep>labels, or the path alone
        video, _, label_text = line.rpartition(sep) if sep in line else (line, "", "")
        found, reason = _labels(label_text, ids, num_classes)
        if found is None:
            return None, reason
        labels = found
    else:  # label fields from the right while they parse; the first field is always the path
        video = line
        while len(parts := video.rsplit(None, 1)) == 2:
            found, reason = _labels(parts[1], ids, num_classes)
            if found is None:
                if _NUMERIC_LABELS.fullmatch(parts[1]):  # a label, but out of range: not part of the path
                    return None, reason
                break
            video, labels = parts[0], found + labels
    video = video.strip()
    if not video:
        return None, "expected '<path>[<separator><labels>]'"
    return VideoEntry(os.path.join(prefix, video) if prefix else video, -1, tuple(sorted(set(labels)))), ""
