"""List formats, class names, malformed lines and out-of-range labels."""
import json
import os

import pytest

from video_nl.data.lists import default_list_path, detect_format, load_classnames, read_video_list
from video_nl.errors import UserError


def test_formats_and_problems(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("a b.mp4 1\n\nc.mp4 9\njunk\nd.mp4 x\ne.mp4 abseiling\n# comment\n")
    entries, problems = read_video_list(str(csv), prefix="/data", num_classes=5, classnames=["abseiling", "b"])
    assert [(e.path, e.label) for e in entries] == [("/data/a b.mp4", 1), ("/data/e.mp4", 0)]
    assert [(p.line_no, p.reason.split()[0]) for p in problems] == [(3, "label"), (4, "expected"), (5, "label")]
    assert "outside [0, 5)" in problems[0].reason
    sep = tmp_path / "val.csv"
    sep.write_text("x y.mp4,3\n")
    assert read_video_list(str(sep), separator=",")[0][0].path == "x y.mp4"
    mm = tmp_path / "kinetics400_val_list_videos.txt"
    mm.write_text("v/1.mp4 2\n")
    cf = tmp_path / "vallist.txt"
    cf.write_text("/abs/1.mp4 3\n")
    assert detect_format(str(mm)) == "mmaction2" and detect_format(str(cf)) == "caffe2"
    assert read_video_list(str(mm))[0][0].label == 2 and read_video_list(str(cf))[0][0].path == "/abs/1.mp4"
    assert default_list_path(str(tmp_path), "val") == str(sep)
    sep.unlink()
    assert default_list_path(str(tmp_path), "val") == str(mm)
    with pytest.raises(UserError):
        read_video_list(str(tmp_path / "missing.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("only_path\n")
    with pytest.raises(UserError, match="no valid line"):
        read_video_list(str(bad))


def test_classnames(tmp_path):
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"b": 1, "a": 0}))
    t = tmp_path / "c.txt"
    t.write_text("a\nb\n")
    assert load_classnames(str(j)) == load_classnames(str(t)) == ["a", "b"]
    j.write_text(json.dumps({"b": 1, "a": 1}))
    with pytest.raises(UserError):
        load_classnames(str(j))


def test_kinetics400_classnames():
    root = os.path.join(os.path.dirname(__file__), "..", "data_lists", "kinetics400")
    names = load_classnames(os.path.join(root, "classnames.json"))
    assert len(names) == 400 and names == sorted(names) and names[0] == "abseiling"
    assert names == load_classnames(os.path.join(root, "classnames.txt"))
