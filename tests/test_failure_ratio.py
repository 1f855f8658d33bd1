"""Failed videos in the val and test lists: reported, counted, and stopped by DATA.MAX_FAILURE_RATIO (real mp4s)."""
from __future__ import annotations

import json

import pytest
from helpers.engine_runs import make_dataset, read_log, tiny_args, video_nl


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch run whose val list has one missing file among 3 good ones; returns (data dir, output dir)."""
    data = make_dataset(tmp_path_factory.mktemp("videos"), train=4, val=3, test=4)
    missing = data / "val_missing.mp4"
    with (data / "val.csv").open("a") as f:
        f.write(f"{missing} 1\n")
    out = tmp_path_factory.mktemp("run")
    result = video_nl("train", *tiny_args(data, out, **{"SOLVER.MAX_EPOCH": 1, "BN.USE_PRECISE_STATS": False,
                                                        "TEST.ENABLE": False}))
    assert result.returncode == 0, result.stderr[-3000:]
    return data, out, result


def test_validation_reports_and_counts_a_missing_val_video(trained):
    data, out, result = trained
    (val,) = [r for r in read_log(out) if r["_type"] == "val_epoch"]
    assert val["num_failed_videos"] == 1 and val["num_videos"] == 4, val
    assert result.stdout.count(f"failed to load val video {data / 'val_missing.mp4'}:") == 1, result.stdout[-3000:]


def test_test_list_mostly_missing_stops_after_writing_the_results(trained, tmp_path):
    data, out, _ = trained
    good = (data / "test.csv").read_text().splitlines()[0]
    missing = [str(data / f"gone_{i}.mp4") for i in range(3)]
    test_list = tmp_path / "test.csv"
    test_list.write_text("\n".join([good, *(f"{p} 0" for p in missing)]) + "\n")
    result = video_nl("test", *tiny_args(data, tmp_path / "test_run", **{"DATA.TEST_LIST": str(test_list)}),
                      "--checkpoint", str(out / "checkpoints" / "checkpoint_epoch_00001.pyth"))
    err = result.stderr.strip()
    assert result.returncode == 2, result.stderr[-3000:]
    assert err.startswith("video-nl test: error:") and "\n" not in err and "Traceback" not in result.stderr, err
    assert "3 of 4 videos" in err and "DATA.MAX_FAILURE_RATIO" in err and missing[0] in err, err
    summary = json.loads((tmp_path / "test_run" / "test" / "summary.json").read_text())
    assert summary["num_videos"] == 4 and summary["num_failed"] == 3 and summary["top1"] <= 25.0, summary
    assert (tmp_path / "test_run" / "test" / "predictions.json").exists()


def test_summary_counts_dropped_lines_and_failed_videos_over_the_full_list(trained, tmp_path):
    """summary.json keeps top1/top5 over the list's parsed videos (a failed one counts as wrong) and adds
    top1_full_list/top5_full_list over every listed line (dropped lines and failed videos wrong, the Caffe2
    way), with num_listed, num_dropped_lines and num_failed."""
    data, out, _ = trained
    good = (data / "test.csv").read_text().splitlines()  # 4 decodable videos
    test_list = tmp_path / "test.csv"
    test_list.write_text("\n".join([
        *good, f"{data / 'gone.mp4'} 0",  # listed, fails to decode
        "no_label.mp4", f"{good[0].rsplit(' ', 1)[0]} 7",  # dropped by the parser: malformed, label >= 2
        "# a comment", ""]) + "\n")  # not video lines
    result = video_nl("test", *tiny_args(data, tmp_path / "test_run", **{"DATA.TEST_LIST": str(test_list)}),
                      "--checkpoint", str(out / "checkpoints" / "checkpoint_epoch_00001.pyth"))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "test_run" / "test" / "summary.json").read_text())
    assert (summary["num_listed"], summary["num_dropped_lines"], summary["num_videos"], summary["num_failed"]) == \
        (7, 2, 5, 1), summary
    preds = json.loads((tmp_path / "test_run" / "test" / "predictions.json").read_text())
    top1 = sum(bool(p["top5"]) and p["top5"][0]["class"] == p["label"] for p in preds)
    assert summary["top1"] == pytest.approx(100 * top1 / 5) and summary["top5"] == pytest.approx(100 * 4 / 5)
    assert summary["top1_full_list"] == pytest.approx(100 * top1 / 7)
    assert summary["top5_full_list"] == pytest.approx(100 * 4 / 7)  # 2 classes: every decoded video is in top-5
    (final,) = [r for r in read_log(tmp_path / "test_run") if r["_type"] == "test_final"]
    assert final["top5_full_list"] == pytest.approx(100 * 4 / 7) and final["num_dropped_lines"] == 2
