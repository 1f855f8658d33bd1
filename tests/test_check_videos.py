"""``video-nl check-videos``: indexes every video of the lists in parallel, reports each kind of problem file,
exits 1 only when some file is unreadable, resumes from the index it already built, survives hanging files."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml
from helpers.corpus import corpus_frames
from helpers.videos import write_mp4

from video_nl.cli import main as cli_main
from video_nl.data import frame_index as fi
from video_nl.data.check import index_videos


def _run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        cli_main(["check-videos", *args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture()
def lists(corpus, tmp_path):
    """A list with a good video, each problem class, and unreadable files; a list of good videos only; a config
    whose clips span 7 frames (4 × stride 2)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    names = ["mp4_h264", "mpeg1_ps_concat", "mkv_vfr", "mp4_h264_open_gop", "avi_mpeg4_packed", "mp4_edit_list_cut"]
    good = [shutil.copy(corpus[n], videos / os.path.basename(corpus[n])) for n in names]
    short = write_mp4(videos / "short.mp4", corpus_frames(5), fps=25)
    (videos / "text.mp4").write_text("not a video\n" * 20)
    data = open(good[0], "rb").read()
    (videos / "truncated.mp4").write_bytes(data[: len(data) // 2])
    bad = [str(videos / "text.mp4"), str(videos / "truncated.mp4"), str(videos / "missing.mp4")]
    mixed = tmp_path / "mixed" / "train.csv"
    mixed.parent.mkdir()
    mixed.write_text("".join(f"{p} 0\n" for p in [*good, short, *bad]) + "no_label_line\n")
    clean = tmp_path / "clean" / "val.csv"
    clean.parent.mkdir()
    clean.write_text("".join(f"{p} 1\n" for p in good[:2]))
    cfg = tmp_path / "clip.yaml"
    cfg.write_text(yaml.safe_dump({"DATA": {"NUM_FRAMES": 4, "SAMPLING_RATE": 2}}))
    return {"mixed": str(mixed), "clean": str(clean), "cfg": str(cfg), "good": [str(g) for g in good],
            "short": str(short), "bad": bad}


def test_reports_every_problem_class_and_exits_1(lists, capsys):
    code, out, err = _run(capsys, lists["mixed"], "--cfg", lists["cfg"], "--workers", "2", "--json",
                          "--no-progress")
    report = json.loads(out)
    assert code == 1 and "checked 10 videos" in err and "3 unreadable" in err
    videos = {os.path.basename(v["path"]): v for v in report["videos"]}
    assert report["summary"]["videos"] == 10 and report["summary"]["unreadable"] == 3
    assert report["summary"]["list_problems"] == 1 and "no_label_line" in report["list_problems"][0]
    assert videos["missing.mp4"]["reason"] == "missing file" and not videos["missing.mp4"]["usable"]
    assert "not a video" in videos["text.mp4"]["reason"] and "truncated" in videos["truncated.mp4"]["reason"]
    fine = videos["h264.mp4"]
    assert fine["usable"] and not fine["problems"] and fine["route"] == "decord" and fine["frames"] == 40
    concat = videos["mpeg1_concat.mpg"]
    assert (concat["frames"], concat["container_frames"]) == (40, 16) and concat["index_method"] == "decode"
    assert "duration × frame rate gives 16 frames, 40 decode" in concat["problems"]
    assert videos["vfr.mkv"]["vfr"] and "variable frame rate" in videos["vfr.mkv"]["problems"]
    cut = videos["edit_list_cut.mp4"]
    assert "the header says 40 frames, 37 decode" in cut["problems"] and cut["container_frames_from"] == "header"
    open_gop = videos["open_gop.mp4"]
    assert open_gop["exact_path"] and open_gop["route"] == "pyav" and "keyframe" in open_gop["decord_note"]
    assert videos["mpeg4_packed.avi"]["index_note"].startswith("avi container")
    assert videos["short.mp4"]["too_short"] and videos["short.mp4"]["clip_span"] == 7
    assert sum(v["too_short"] for v in report["videos"] if v["usable"]) == 1
    assert report["index_dirs"] == [os.path.join(os.path.dirname(lists["mixed"]), "frame_index")]


def test_clean_list_exits_0_with_a_summary_line(lists, capsys):
    code, out, _ = _run(capsys, lists["clean"], "--cfg", lists["cfg"], "--no-progress")
    assert code == 0
    assert out.strip().splitlines()[-1].startswith("checked 2 videos in 1 list(s): 2 usable, 0 unreadable")
    assert "mpeg1_concat.mpg: duration × frame rate gives 16 frames, 40 decode" in out  # listed per file


def test_resumes_from_the_index_it_built(lists, capsys, tmp_path):
    folder = str(tmp_path / "index")
    index_videos(lists["good"][:2], index_dir=folder, workers=1, progress=False)  # an interrupted earlier run
    _, out, _ = _run(capsys, lists["clean"], lists["mixed"], "--index-dir", folder, "--json", "--no-progress")
    summary = json.loads(out)["summary"]
    assert summary["videos"] == 12 and summary["reused"] == 2 + 2  # both of the clean list, again in mixed
    _, out, _ = _run(capsys, lists["mixed"], "--index-dir", folder, "--json", "--no-progress")
    assert json.loads(out)["summary"]["reused"] == 9  # all but the missing file
    write_mp4(lists["short"], corpus_frames(30), fps=25)  # a changed file is indexed again
    _, out, _ = _run(capsys, lists["mixed"], "--index-dir", folder, "--json", "--no-progress")
    report = json.loads(out)
    assert report["summary"]["built"] == 2  # the changed one and the missing one
    assert next(v for v in report["videos"] if v["path"] == lists["short"])["frames"] == 30


def test_a_file_that_hangs_is_unreadable_after_the_timeout(lists, tmp_path, capsys):
    fifo = str(tmp_path / "fifo.mp4")
    os.mkfifo(fifo)  # opening it blocks forever: only the helper's timeout ends it
    listing = tmp_path / "hang.csv"
    listing.write_text(f"{fifo} 0\n{lists['good'][0]} 0\n")
    code, out, _ = _run(capsys, str(listing), "--timeout", "2", "--json", "--no-progress")
    videos = {v["path"]: v for v in json.loads(out)["videos"]}
    assert code == 1 and "timeout" in videos[fifo]["reason"] and videos[lists["good"][0]]["usable"]


def test_index_videos_outcomes(corpus, tmp_path):
    paths = [corpus["mp4_hevc"], corpus["h264_raw"], str(tmp_path / "missing.mp4")]
    outcomes = index_videos(paths, index_dir=str(tmp_path / "ix"), workers=2, progress=False, timeout_s=0)
    assert [o.path for o in outcomes] == paths
    assert outcomes[0].index.method == "scan" and outcomes[1].index.numbering == "count"
    assert outcomes[2].index is None and outcomes[2].reason == "missing file"
    assert fi.is_cached(paths[0], str(tmp_path / "ix")) and not any(o.reused for o in outcomes)


def test_index_videos_closes_the_helper_processes_it_started(corpus, tmp_path, monkeypatch):
    from video_nl.data import decoding

    started = []
    real_init = decoding._Helper.__init__

    def recording_init(self):
        real_init(self)
        started.append(self)

    monkeypatch.setattr(decoding._Helper, "__init__", recording_init)
    outcomes = index_videos([corpus["mp4_h264"], corpus["webm_vp9"], corpus["avi_mjpeg"]],
                            index_dir=str(tmp_path / "ix"), workers=2, progress=False)
    assert all(o.index is not None for o in outcomes) and 1 <= len(started) <= 2
    assert all(h.proc.poll() is not None for h in started)  # one per worker thread, all gone
