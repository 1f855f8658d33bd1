"""Readers of the official annotation files of UCF101, HMDB51, Something-Something v2 and Charades.

Each reader takes ROOT, the folder where the dataset's official archives were unpacked side by side as
distributed, and returns an :class:`OfficialDataset`: the classes in the official order (label = 0-based
position), each split's videos as paths relative to the video folder with their label(s), and the lines it
could not use. Nothing here opens a video (:mod:`video_nl.data.prepare_dataset` finds, probes and lists them).

================ ============================================================ ==============================
dataset          annotations (under ROOT)                                     videos
================ ============================================================ ==============================
ucf101           ``ucfTrainTestlist/classInd.txt`` (``1 ApplyEyeMakeup``),    ``UCF-101/<Class>/*.avi``
                 ``trainlist0N.txt`` (``Class/v_….avi 1``), ``testlist0N.txt``
                 (``Class/v_….avi``; label from the folder)
hmdb51           ``testTrainMulti_7030_splits/<class>_test_splitN.txt``        ``<class>/*.avi`` (or under
                 (``video.avi 1``: 1 = train, 2 = test, 0 = unused); classes  ``hmdb51_org/``)
                 in alphabetical order
ssv2             ``labels.json`` (template → id), ``train.json``,             ``20bn-something-something-v2/
                 ``validation.json`` (``template`` with ``[something]``       <id>.webm``
                 placeholders; brackets removed as PySlowFast does); also
                 the ``something-something-v2-*.json`` names, in ROOT or
                 ROOT/labels
charades         ``Charades/Charades_v1_{train,test}.csv`` (``actions``       ``Charades_v1_480/<id>.mp4``
                 ``c092 11.90 21.20;c147 …``: video-level labels = the set    (or ``Charades_v1/``)
                 of classes), ``Charades_v1_classes.txt`` (``c000 name``)
================ ============================================================ ==============================

Splits: ``train``, ``val`` and ``test``; where a dataset has no separate validation split the val list is
the test list (UCF101, HMDB51, Charades: ``Charades_v1_test.csv`` is the standard evaluation set). SSv2's
``test.json`` has no labels, so its test list is the validation set (as published SSv2 results are).
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field

from ..errors import UserError

Labels = int | tuple[int, ...]


@dataclass
class OfficialDataset:
    """What a reader found: classes (official order), per-split ``(relative video path, label(s))``, the
    video folder, and the annotation lines it could not use (``file:line: reason``)."""

    name: str
    classes: list[str]
    splits: dict[str, list[tuple[str, Labels]]]
    video_dir: str
    multi_label: bool = False
    problems: list[str] = field(default_factory=list)


def _first_dir(root: str, candidates: tuple[str, ...], *, what: str) -> str:
    for c in candidates:
        path = os.path.join(root, c)
        if os.path.isdir(path):
            return path
    raise UserError(f"No {what} folder in {root}: looked for {', '.join(candidates)} (unpack the official archives "
                    f"side by side in ROOT, or pass --videos DIR).")


def _first_file(root: str, folders: tuple[str, ...], names: tuple[str, ...], *, what: str) -> str:
    tried = [os.path.join(root, d, n) for d in folders for n in names]
    found = next((p for p in tried if os.path.isfile(p)), None)
    if found is None:
        raise UserError(f"No {what} in {root}: looked for {', '.join(os.path.relpath(p, root) for p in tried)}.")
    return found


def _lines(path: str) -> list[tuple[int, str]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return [(i, line.strip()) for i, line in enumerate(f, 1) if line.strip()]


def _check_split(name: str, split: int, count: int) -> None:
    if not 1 <= split <= count:
        raise UserError(f"{name} has {count} official split{'s' if count > 1 else ''}: --split must be in "
                        f"[1, {count}], got {split}.")


# ---------------------------------------------------------------------------------------------- UCF101
def read_ucf101(root: str, *, split: int = 1, video_dir: str | None = None) -> OfficialDataset:
    """UCF101 split ``split`` (1–3): train = ``trainlist0N.txt``, val = test = ``testlist0N.txt``."""
    _check_split("ucf101", split, 3)
    lists = _first_dir(root, ("ucfTrainTestlist", "UCF101TrainTestSplits-RecognitionTask/ucfTrainTestlist"),
                       what="ucfTrainTestlist")
    class_file = os.path.join(lists, "classInd.txt")
    if not os.path.isfile(class_file):
        raise UserError(f"{class_file} does not exist (UCF101's class index, `1 ApplyEyeMakeup` per line).")
    problems: list[str] = []
    ids: dict[int, str] = {}
    for no, line in _lines(class_file):
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            ids[int(parts[0])] = parts[1]
        else:
            problems.append(f"{class_file}:{no}: expected '<id> <class>'")
    if sorted(ids) != list(range(1, len(ids) + 1)):
        raise UserError(f"{class_file}: class ids must be 1..K, got {sorted(ids)[:5]}...")
    classes = [ids[i] for i in range(1, len(ids) + 1)]
    by_name = {c.lower(): i for i, c in enumerate(classes)}
    train, test = [], []
    for kind, out in (("train", train), ("test", test)):
        path = os.path.join(lists, f"{kind}list{split:02d}.txt")
        if not os.path.isfile(path):
            raise UserError(f"{path} does not exist (UCF101 split {split}).")
        for no, line in _lines(path):
            video, _, label_text = line.partition(" ")
            folder = video.replace("\\", "/").split("/")[0].lower()
            if label_text.strip().isdigit() and 1 <= int(label_text) <= len(classes):
                out.append((video.replace("\\", "/"), int(label_text) - 1))
            elif not label_text.strip() and folder in by_name:
                out.append((video.replace("\\", "/"), by_name[folder]))
            else:
                problems.append(f"{path}:{no}: no class for {line!r}")
    video_dir = video_dir or _first_dir(root, ("UCF-101", "UCF101", "videos"), what="UCF-101 video")
    return OfficialDataset("ucf101", classes, {"train": train, "val": test, "test": test}, video_dir,
                           problems=problems)


# ---------------------------------------------------------------------------------------------- HMDB51
_HMDB_SPLIT_FILE = re.compile(r"(?P<cls>.+)_test_split(?P<n>\d)\.txt")


def read_hmdb51(root: str, *, split: int = 1, video_dir: str | None = None) -> OfficialDataset:
    """HMDB51 split ``split`` (1–3) from ``<class>_test_split<N>.txt`` (1 = train, 2 = test, 0 = unused);
    classes alphabetical; val = test."""
    _check_split("hmdb51", split, 3)
    lists = _first_dir(root, ("testTrainMulti_7030_splits", "test_train_splits/testTrainMulti_7030_splits"),
                       what="testTrainMulti_7030_splits")
    files = {m["cls"]: os.path.join(lists, name) for name in os.listdir(lists)
             if (m := _HMDB_SPLIT_FILE.fullmatch(name)) and int(m["n"]) == split}
    if not files:
        raise UserError(f"No <class>_test_split{split}.txt in {lists}.")
    classes = sorted(files)
    problems: list[str] = []
    train, test = [], []
    for label, cls in enumerate(classes):
        for no, line in _lines(files[cls]):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                problems.append(f"{files[cls]}:{no}: expected '<video> 0|1|2'")
            elif parts[1] != "0":
                (train if parts[1] == "1" else test).append((f"{cls}/{parts[0]}", label))
    video_dir = video_dir or _hmdb_video_dir(root, classes)
    return OfficialDataset("hmdb51", classes, {"train": train, "val": test, "test": test}, video_dir,
                           problems=problems)


def _hmdb_video_dir(root: str, classes: list[str]) -> str:
    """The folder holding the ``<class>/`` video folders (ROOT, or ``hmdb51_org``/``hmdb51``/``videos``)."""
    for c in ("hmdb51_org", "hmdb51", "videos", "."):
        if os.path.isdir(os.path.join(root, c, classes[0])):
            return os.path.normpath(os.path.join(root, c))
    raise UserError(f"No HMDB51 class folder {classes[0]!r} in {root} (or its hmdb51_org/, hmdb51/, videos/): "
                    f"unpack each class's .rar there, or pass --videos DIR.")


# ---------------------------------------------------------------------------------------------- SSv2
def ssv2_label_key(template: str) -> str:
    """``labels.json``'s key of a video's ``template``: the placeholders' brackets removed
    (``Putting [something] on [something]`` → ``Putting something on something``), as PySlowFast does."""
    return template.replace("[", "").replace("]", "")


def read_ssv2(root: str, *, split: int = 1, video_dir: str | None = None) -> OfficialDataset:
    """Something-Something v2: train = ``train.json``, val = test = ``validation.json`` (``test.json`` has
    no labels)."""
    _check_split("ssv2", split, 1)
    folders = (".", "labels", "annotations")

    def find(kind: str) -> str:
        return _first_file(root, folders, (f"{kind}.json", f"something-something-v2-{kind}.json"),
                           what=f"SSv2 {kind}.json")

    with open(find("labels"), encoding="utf-8") as f:
        templates = {k: int(v) for k, v in json.load(f).items()}
    if sorted(templates.values()) != list(range(len(templates))):
        raise UserError("SSv2 labels.json must map each template to a distinct id 0..K-1.")
    classes = sorted(templates, key=templates.get)
    problems: list[str] = []
    splits: dict[str, list[tuple[str, Labels]]] = {}
    for split_name, kind in (("train", "train"), ("val", "validation")):
        path = find(kind)
        with open(path, encoding="utf-8") as f:
            videos = json.load(f)
        splits[split_name] = []
        for i, video in enumerate(videos):
            key = ssv2_label_key(str(video.get("template", "")))
            if key in templates and "id" in video:
                splits[split_name].append((f"{video['id']}.webm", templates[key]))
            else:
                problems.append(f"{path}: entry {i} ({str(video)[:80]}): no id or unknown template {key!r}")
    splits["test"] = splits["val"]
    video_dir = video_dir or _first_dir(root, ("20bn-something-something-v2", "videos"), what="SSv2 video")
    return OfficialDataset("ssv2", classes, splits, video_dir, problems=problems)


# ---------------------------------------------------------------------------------------------- Charades
def read_charades(root: str, *, split: int = 1, video_dir: str | None = None) -> OfficialDataset:
    """Charades v1, multi-label: train = ``Charades_v1_train.csv``, val = test = ``Charades_v1_test.csv``;
    a video's labels are the classes of its ``actions`` (none when empty)."""
    _check_split("charades", split, 1)
    folders = ("Charades", ".", "annotations")
    class_file = _first_file(root, folders, ("Charades_v1_classes.txt",), what="Charades_v1_classes.txt")
    problems: list[str] = []
    codes: dict[str, int] = {}
    classes: list[str] = []
    for no, line in _lines(class_file):
        code, _, name = line.partition(" ")
        if not re.fullmatch(r"c\d{3}", code) or code in codes:
            problems.append(f"{class_file}:{no}: expected '<c###> <name>'")
            continue
        codes[code] = len(classes)
        classes.append(name.strip() or code)
    splits: dict[str, list[tuple[str, Labels]]] = {}
    for split_name, kind in (("train", "train"), ("val", "test")):
        path = _first_file(root, folders, (f"Charades_v1_{kind}.csv",), what=f"Charades_v1_{kind}.csv")
        splits[split_name] = []
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            for row_no, row in enumerate(csv.DictReader(f), 2):
                labels, bad = _charades_actions(row.get("actions") or "", codes)
                if not row.get("id") or bad:
                    problems.append(f"{path}:{row_no}: {'no id' if not row.get('id') else f'unknown action {bad!r}'}")
                    continue
                splits[split_name].append((f"{row['id']}.mp4", labels))
    splits["test"] = splits["val"]
    video_dir = video_dir or _first_dir(root, ("Charades_v1_480", "Charades_v1", "videos"), what="Charades video")
    return OfficialDataset("charades", classes, splits, video_dir, multi_label=True, problems=problems)


def _charades_actions(actions: str, codes: dict[str, int]) -> tuple[tuple[int, ...], str]:
    """Sorted class ids of an ``actions`` field (``c092 11.90 21.20;c147 0.00 12.60``), and the first
    unknown action ("" when all are known)."""
    labels = set()
    for action in filter(None, (a.strip() for a in actions.split(";"))):
        code = action.split()[0]
        if code not in codes:
            return (), action
        labels.add(codes[code])
    return tuple(sorted(labels)), ""


READERS = {"ucf101": read_ucf101, "hmdb51": read_hmdb51, "ssv2": read_ssv2, "charades": read_charades}
