"""`video-nl prepare-dataset` on tiny copies of each official layout: UCF101 and HMDB51 (MPEG-4 Part 2 AVI, as
distributed), Something-Something v2 (VP9 WebM, template labels) and Charades (H.264 mp4, multi-label actions)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.engine_runs import video_nl
from helpers.videos import block_frames, write_mp4

from video_nl.data.decoding import decode_frames
from video_nl.data.frame_index import read_cached
from video_nl.data.lists import load_classnames, read_video_list
from video_nl.data.official_lists import read_charades, read_hmdb51, read_ssv2, read_ucf101, ssv2_label_key
from video_nl.data.prepare_dataset import VideoFinder, prepare_official
from video_nl.errors import UserError


def _video(path: Path, seed: int, codec: str = "libx264") -> None:
    write_mp4(path, block_frames(8, 32, seed), codec=codec)


def _lists(out: Path, name: str, **kw) -> list[tuple[str, object]]:
    entries, problems = read_video_list(str(out / f"{name}.csv"), **kw)
    assert not problems
    return [(Path(e.path).name, e.labels if kw.get("multi_label") else e.label) for e in entries]


# ---------------------------------------------------------------------------------------------- UCF101
@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 Archery\r\n3 HandstandPushups\r\n")
    (lists / "trainlist01.txt").write_bytes(
        b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nArchery/v_Archery_g08_c01.avi 2\r\n"
        b"HandstandPushups/v_HandStandPushups_g08_c01.avi 3\r\nArchery/v_Archery_g09_c01.avi 2\r\n")
    (lists / "testlist01.txt").write_bytes(
        b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\nArchery/v_Archery_g01_c01.avi\r\n"
        b"HandstandPushups/v_HandstandPushups_g01_c01.avi\r\nNoSuchClass/v_x.avi\r\n")
    videos = root / "UCF-101"
    for i, rel in enumerate(["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "Archery/v_Archery_g08_c01.avi",
                             "HandstandPushups/v_HandStandPushups_g08_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
                             "HandstandPushups/v_HandStandPushups_g01_c01.avi"]):
        _video(videos / rel, i, codec="mpeg4")  # MPEG-4 Part 2 in AVI, as UCF101 is distributed
    (videos / "Archery" / "v_Archery_g01_c01.avi").write_bytes(b"RIFF garbage")  # unreadable
    # v_Archery_g09_c01.avi is listed but missing
    return root


def test_ucf101_lists_classes_and_problems(ucf_root, tmp_path):
    dataset = read_ucf101(str(ucf_root), split=1)
    assert dataset.classes == ["ApplyEyeMakeup", "Archery", "HandstandPushups"]
    assert dataset.splits["val"] is dataset.splits["test"] and len(dataset.splits["train"]) == 4
    assert len(dataset.problems) == 1 and "NoSuchClass" in dataset.problems[0]
    report = prepare_official(dataset, str(tmp_path), workers=1)
    assert _lists(tmp_path, "train") == [("v_ApplyEyeMakeup_g08_c01.avi", 0), ("v_Archery_g08_c01.avi", 1),
                                         ("v_HandStandPushups_g08_c01.avi", 2)]
    # the test list names v_HandstandPushups_…: found ignoring case; the garbage file is left out
    assert _lists(tmp_path, "test") == [("v_ApplyEyeMakeup_g01_c01.avi", 0), ("v_HandStandPushups_g01_c01.avi", 2)]
    assert (tmp_path / "val.csv").read_text() == (tmp_path / "test.csv").read_text()
    assert load_classnames(str(tmp_path / "classnames.json")) == dataset.classes
    train, test = report["splits"]["train"], report["splits"]["test"]
    assert (train["listed"], train["written"], test["listed"], test["written"]) == (4, 3, 3, 2)
    assert train["missing"] == [f"Archery/v_Archery_g09_c01.avi: missing (not under {dataset.video_dir})"]
    assert len(test["unreadable"]) == 1 and "v_Archery_g01_c01.avi" in test["unreadable"][0]
    assert json.loads((tmp_path / "prepare_report.json").read_text())["splits"]["val"]["written"] == 2
    # every listed video has a frame index in OUT/frame_index (where the loaders look), read without decoding
    for name in ("train", "test"):
        for entry in read_video_list(str(tmp_path / f"{name}.csv"))[0]:
            index = read_cached(entry.path, str(tmp_path / "frame_index"))
            assert index is not None and index.num_frames == 8 and index.codec == "mpeg4", entry.path
    with pytest.raises(UserError, match=r"--split must be in \[1, 3\]"):
        read_ucf101(str(ucf_root), split=4)
    with pytest.raises(UserError, match="trainlist02.txt does not exist"):
        read_ucf101(str(ucf_root), split=2)


def test_prepare_dataset_command_with_resize(ucf_root, tmp_path):
    out = tmp_path / "lists"
    result = video_nl("prepare-dataset", "ucf101", str(ucf_root), str(out), "--resize", "--short-side", "48",
                      "--workers", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[train] left out Archery/v_Archery_g09_c01.avi: missing" in result.stdout
    assert "[annotations] skipped" in result.stdout and "MODEL.NUM_CLASSES 3" in result.stdout
    entries, _ = read_video_list(str(out / "train.csv"))
    assert [Path(e.path).relative_to(out / "videos").as_posix() for e in entries] == [
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.mp4", "Archery/v_Archery_g08_c01.mp4",
        "HandstandPushups/v_HandStandPushups_g08_c01.mp4"]
    assert decode_frames(entries[0].path, [0, 7], timeout_s=0).shape == (2, 48, 48, 3)


# ---------------------------------------------------------------------------------------------- HMDB51
def test_hmdb51_split_ids(tmp_path):
    root = tmp_path / "hmdb"
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    names = {"cartwheel": ["a_cartwheel_f_0.avi", "b_cartwheel_f_1.avi", "c_cartwheel_f_2.avi"],
             "brush_hair": ["April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "x_brush_hair_1.avi", "y_brush_hair_2.avi"]}
    for cls, videos in names.items():
        for n in (1, 2):  # split 2 swaps train and test: --split picks the file
            ids = ["1", "2", "0"] if n == 1 else ["2", "1", "0"]
            (splits / f"{cls}_test_split{n}.txt").write_text("".join(f"{v} {i} \n" for v, i in zip(videos, ids)))
        for i, v in enumerate(videos[:2]):
            _video(root / "hmdb51_org" / cls / v, i, codec="mpeg4")
    dataset = read_hmdb51(str(root), split=1)
    assert dataset.classes == ["brush_hair", "cartwheel"] and dataset.video_dir.endswith("hmdb51_org")
    prepare_official(dataset, str(tmp_path / "out"), workers=1)
    assert _lists(tmp_path / "out", "train") == [("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 0),
                                                 ("a_cartwheel_f_0.avi", 1)]
    assert _lists(tmp_path / "out", "val") == [("x_brush_hair_1.avi", 0), ("b_cartwheel_f_1.avi", 1)]
    assert [v for v, _ in read_hmdb51(str(root), split=2).splits["train"]] == [
        "brush_hair/x_brush_hair_1.avi", "cartwheel/b_cartwheel_f_1.avi"]


# ---------------------------------------------------------------------------------------------- SSv2
def test_ssv2_template_labels(tmp_path):
    root = tmp_path / "ssv2"
    (root / "labels").mkdir(parents=True)
    labels = {"Putting something on a surface": "0", "Pushing something from left to right": "1"}
    (root / "labels" / "labels.json").write_text(json.dumps(labels))
    train = [{"id": "3", "label": "putting a cup on a table", "template": "Putting [something] on a surface",
              "placeholders": ["a cup"]},
             {"id": "4", "label": "pushing pen from left to right", "template": "Pushing [something] from left to right",
              "placeholders": ["pen"]},
             {"id": "5", "template": "Dancing [something]"}]
    (root / "labels" / "train.json").write_text(json.dumps(train))
    (root / "labels" / "validation.json").write_text(json.dumps([{"id": "7", "template": "Pushing [something] from "
                                                                  "left to right", "placeholders": ["box"]}]))
    (root / "labels" / "test.json").write_text(json.dumps([{"id": "9"}]))
    for i, vid in enumerate(("3", "4", "5", "7")):
        _video(root / "20bn-something-something-v2" / f"{vid}.webm", i, codec="libvpx-vp9")
    assert ssv2_label_key("Putting [something] on [something]") == "Putting something on something"
    dataset = read_ssv2(str(root))
    assert dataset.classes == ["Putting something on a surface", "Pushing something from left to right"]
    assert len(dataset.problems) == 1 and "Dancing something" in dataset.problems[0]
    out = tmp_path / "out"
    prepare_official(dataset, str(out), workers=1)
    assert _lists(out, "train") == [("3.webm", 0), ("4.webm", 1)]
    assert _lists(out, "val") == _lists(out, "test") == [("7.webm", 1)]
    assert json.loads((out / "classnames.json").read_text()) == {k: int(v) for k, v in labels.items()}


# ---------------------------------------------------------------------------------------------- Charades
def test_charades_multi_label_actions(tmp_path):
    root = tmp_path / "charades"
    ann = root / "Charades"
    ann.mkdir(parents=True)
    (ann / "Charades_v1_classes.txt").write_text("c000 Holding some clothes\nc001 Putting clothes somewhere\n"
                                                 "c002 Taking some clothes from somewhere\n")
    header = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
    (ann / "Charades_v1_train.csv").write_text(
        header + 'AAAAA,S1,Kitchen,6,7,Yes,"A person, holding clothes.",clothes,"Holds, then puts.",'
                 '"c000 0.00 5.10;c001 4.20 9.00;c000 7.00 8.00",10.5\n'
        'BBBBB,S2,Bedroom,5,6,Yes,Sits.,,Nothing.,,8.0\n'
        'CCCCC,S3,Garage,5,6,Yes,x,,y,c999 1.0 2.0,8.0\n')
    (ann / "Charades_v1_test.csv").write_text(header + 'DDDDD,S4,Hall,7,7,Yes,x,,y,c002 0.00 3.00,5.0\n')
    for i, vid in enumerate(("AAAAA", "BBBBB", "CCCCC", "DDDDD")):
        _video(root / "Charades_v1_480" / f"{vid}.mp4", i)
    dataset = read_charades(str(root))
    assert dataset.multi_label and dataset.classes[1] == "Putting clothes somewhere"
    assert len(dataset.problems) == 1 and "c999" in dataset.problems[0]
    out = tmp_path / "out"
    prepare_official(dataset, str(out), workers=1)
    assert (out / "train.csv").read_text().splitlines()[1].endswith("BBBBB.mp4")  # no action: all-negative
    assert _lists(out, "train", multi_label=True, num_classes=3) == [("AAAAA.mp4", (0, 1)), ("BBBBB.mp4", ())]
    assert _lists(out, "test", multi_label=True, num_classes=3) == [("DDDDD.mp4", (2,))]
    with pytest.raises(UserError, match="Charades_v1_classes.txt"):
        read_charades(str(tmp_path))


# ---------------------------------------------------------------------------------------------- helpers
def test_video_finder_and_kinetics_alias(tmp_path):
    _video(tmp_path / "v" / "Class A" / "Clip.MP4", 0)
    finder = VideoFinder(str(tmp_path / "v"))
    assert finder.find("class a/clip.mp4") == str(tmp_path / "v" / "Class A" / "Clip.MP4")
    assert finder.find("Class A/Clip.avi") == str(tmp_path / "v" / "Class A" / "Clip.MP4")  # re-encoded copy
    assert finder.find("Class A/Other.mp4") is None and finder.find("Nope/Clip.mp4") is None
    kinetics = tmp_path / "k400"
    for split in ("train", "val"):
        for c, cls in enumerate(("b class", "a class")):
            _video(kinetics / split / cls / f"{split}{c}.mp4", c)
    result = video_nl("prepare-dataset", "kinetics", str(kinetics), str(tmp_path / "k"), "--workers", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    same = video_nl("prepare-kinetics", str(kinetics), str(tmp_path / "k2"), "--workers", "1")
    assert same.returncode == 0
    for name in ("train.csv", "val.csv", "test.csv", "classnames.json"):
        assert (tmp_path / "k" / name).read_text() == (tmp_path / "k2" / name).read_text()
