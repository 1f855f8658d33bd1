"""Synthetic dataset: deterministic files, time-reversed class pairs, loadable lists; prepare-kinetics."""
import argparse
import json
import os

import numpy as np

from video_nl.data.decoding import decode_frames
from video_nl.data.lists import read_video_list
from video_nl.data.frame_index import is_cached
from video_nl.data.prepare import main as prepare_main
from video_nl.data.synthetic import CLASSNAMES, make_synthetic, render


def test_pairs_are_time_reversals_with_same_frame_bag():
    for label in range(0, len(CLASSNAMES), 2):
        for seed in range(3):
            a, b = render(label, seed), render(label + 1, seed)
            assert a.shape == (16, 32, 32, 3) and np.array_equal(b, a[::-1])
            assert not np.array_equal(a, b)  # the relation is visible in time


def test_generation_is_deterministic_and_listed(tmp_path):
    kw = dict(classes=4, train_per_class=2, val_per_class=1, frames=8, size=32, workers=1)
    lists = make_synthetic(str(tmp_path / "a"), seed=3, **kw)
    make_synthetic(str(tmp_path / "b"), seed=3, **kw)
    for (pa, la), (pb, lb) in zip(lists["train"], [(p.replace("/a/", "/b/"), l) for p, l in lists["train"]]):
        assert la == lb and np.array_equal(decode_frames(pa, range(8), timeout_s=0).numpy(),
                                           decode_frames(pb, range(8), timeout_s=0).numpy())
    entries, problems = read_video_list(str(tmp_path / "a" / "test.csv"), num_classes=4)
    assert len(entries) == 4 and not problems
    assert json.load(open(tmp_path / "a" / "classnames.json")) == {n: i for i, n in enumerate(CLASSNAMES[:4])}
    # the encoded video is the rendered one (H.264 at crf 18 on flat shapes is close to lossless)
    path, label = lists["val"][1]
    seedless = decode_frames(path, range(8), timeout_s=0).numpy().astype(int)
    assert seedless.shape == (8, 32, 32, 3)

    # prepare-kinetics on the same tree: alphabetical labels, probing reports the broken file
    root = tmp_path / "a"
    (root / "val" / "move_up" / "broken.mp4").write_bytes(b"garbage")
    out = tmp_path / "lists"
    prepare_main(argparse.Namespace(root=str(root), out=str(out), splits=["train", "val"], underscores=False,
                                    resize=True, short_side=48, workers=1))
    classes = json.load(open(out / "classnames.json"))
    assert list(classes) == sorted(CLASSNAMES[:4]) and list(classes.values()) == [0, 1, 2, 3]
    val, _ = read_video_list(str(out / "val.csv"))
    assert len(val) == 4 and all(os.path.exists(e.path) and "/videos/val/" in e.path for e in val)
    frames = decode_frames(val[0].path, [0], timeout_s=0)
    assert frames.shape == (1, 48, 48, 3)
    assert open(out / "test.csv").read() == open(out / "val.csv").read()
    assert not [f for _, _, fs in os.walk(out) for f in fs if f.endswith(".tmp.mp4")]
    # the frame index of every listed video is built where the loaders look for it (beside the lists)
    train, _ = read_video_list(str(out / "train.csv"))
    assert all(is_cached(e.path, str(out / "frame_index")) for e in train + val)
