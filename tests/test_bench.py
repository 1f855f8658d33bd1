"""Bench harness logic with tiny shapes (no timing assertions)."""
from __future__ import annotations

import argparse
import json

import pytest
import torch
from helpers.numerics import FP32_REL

from video_nl.bench import common, model_bench, report, runner
from video_nl.bench.common import Stats, better_by, make_row, peak_memory, time_interleaved
from video_nl.bench.nonlocal_bench import PEER, Case, make_blocks, max_output_difference
from video_nl.bench.scaling import loglog_slope

CPU = torch.device("cpu")


def test_better_by_direction():
    assert better_by(metric="fwd_bwd_time", ours=1.0, peer=2.0) == 2.0
    assert better_by(metric="fwd_bwd_peak_mem", ours=4.0, peer=1.0) == 0.25
    assert better_by(metric="clips_per_s", ours=3.0, peer=1.5) == 2.0


def test_make_row_format():
    row = make_row(bench="nonlocal", case="long_clip", impl="fused", metric="fwd_bwd_time",
                   ours=Stats.of([1.0, 2.0, 3.0]), peer=Stats.of([4.0, 4.0, 5.0]), method="x")
    assert list(row)[:7] == ["bench", "case", "impl", "metric", "ours", "peer", "better_by"]
    assert (row["ours"], row["peer"], row["better_by"]) == (2.0, 4.0, 2.0)
    assert (row["ours_min"], row["ours_max"], row["repeats"], row["unit"], row["method"]) == (1.0, 3.0, 3, "ms", "x")
    json.dumps(row)


def test_stats_inverted_swaps_min_and_max():
    clips = Stats.of([1.0, 2.0, 4.0]).inverted(2.0)
    assert (clips.median, clips.min, clips.max) == (1.0, 0.5, 2.0)


def test_time_interleaved_rotates_order():
    calls: list[str] = []
    fns = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    stats = time_interleaved(fns, device=CPU, warmup=1, repeats=2)
    assert calls == list("abc" "bca" "cab")
    assert all(s.n == 2 for s in stats.values())


def test_peak_memory_measures_a_known_allocation():
    size = 8 * 2**20

    def allocate() -> None:
        a = torch.empty(size, dtype=torch.uint8)
        a.fill_(1)
        b = torch.empty(size, dtype=torch.uint8)  # both alive: peak 2 × size
        del a, b

    peak = peak_memory(allocate, device=CPU)
    assert 2 * size <= peak < 2 * size + 2**20


def test_nonlocal_blocks_match_the_peer():
    case = Case(batch=2, dim=16, size=(2, 4, 4), key_pool=(1, 2, 2), repeats=1)
    blocks = make_blocks(case, device=CPU)
    x = torch.randn(2, 16, 2, 4, 4)
    for impl in ("fused", "explicit"):
        assert max_output_difference(blocks[impl], blocks[PEER], x) <= FP32_REL * float(x.abs().max())  # out ~ x
    blocks[PEER].conv_g.bias.data += 1.0  # the check does notice a different peer
    assert max_output_difference(blocks["fused"], blocks[PEER], x) > 1e-3


def test_model_comparisons_put_the_recommended_setup_first(monkeypatch):
    def names() -> list[str]:
        return [model_bench.impl_name(ours, peer) for ours, peer in model_bench.comparisons(CPU)]

    monkeypatch.setattr(model_bench, "bf16_supported", lambda device: True)
    assert names() == ["ours_bf16_cl_vs_peer_fp32", "ours_fp32_vs_peer_fp32", "ours_bf16_cl_vs_peer_bf16_cl"]
    monkeypatch.setattr(model_bench, "bf16_supported", lambda device: False)
    assert names() == ["ours_fp32_vs_peer_fp32"]


def test_setup_prepare_copies_into_channels_last():
    model, x = torch.nn.Conv3d(3, 4, 1), torch.randn(1, 3, 2, 4, 4)
    copied, xs = model_bench.RECOMMENDED.prepare(model, x)
    assert copied is not model and copied.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert xs.is_contiguous(memory_format=torch.channels_last_3d) and model.weight.is_contiguous()
    assert model_bench.FP32.prepare(model, x)[1] is x


def test_model_bench_quick_rows(tmp_path, capsys):
    args = argparse.Namespace(which="model", json=True, device="cpu", quick=True, out=str(tmp_path))
    assert runner.main(args) == 0
    all_rows = [json.loads(line) for line in (tmp_path / "bench.jsonl").read_text().splitlines()]
    rows = [r for r in all_rows if r["case"] in ("train_step", "inference")]
    expected = [model_bench.impl_name(ours, peer) for ours, peer in model_bench.comparisons(CPU)]
    assert [r["case"] for r in rows] == ["train_step"] * len(expected) + ["inference"] * len(expected)
    assert [r["impl"] for r in rows] == expected * 2
    assert all(r["metric"] == "clips_per_s" and r["ours"] > 0 and r["peer"] > 0 for r in rows)
    assert rows[0]["peer_setup"] == "fp32, contiguous"
    fp32_train = [r for r in rows if "fraction_of_sgemm" in r]
    assert [(r["case"], r["impl"]) for r in fp32_train] == [("train_step", "ours_fp32_vs_peer_fp32")]
    # Train-step variants (no compiled ones in --quick: compiling takes minutes).
    variants = [(r["case"], r["impl"], r["metric"]) for r in all_rows if r not in rows]
    ours = ["eager", "act_checkpoint", "accum2"]
    bf16 = model_bench.bf16_supported(CPU)
    assert variants == ([("train_variants", "ours_best_vs_peer_best", "clips_per_s")]
                        + [("train_variants", f"ours_{v}_vs_peer_best", "clips_per_s") for v in ours]
                        + [("train_variants", f"ours_{v}_vs_peer_best", "train_peak_mem") for v in ours]
                        + [("utilisation", f"ours_eager_vs_{'bf16' if bf16 else 'fp32'}_gemm", "gflop_per_s")]
                        + [("act_checkpoint", "act_checkpoint", "train_peak_mem"),
                           ("act_checkpoint", "act_checkpoint", "train_step_time"),
                           ("accumulation", "accum2", "train_peak_mem"),
                           ("accumulation", "accum2", "train_step_time")])
    head = next(r for r in all_rows if r["impl"] == "ours_best_vs_peer_best")
    assert head["ours_variant"] == "eager" and head["peer_variant"] == "eager" and 0 < head["fraction_of_gemm"] < 1
    utilisation = next(r for r in all_rows if r["case"] == "utilisation")
    assert utilisation["better_by"] == pytest.approx(head["fraction_of_gemm"])
    memory = {r["case"]: r for r in all_rows if r["case"] in ("act_checkpoint", "accumulation")
              and r["metric"] == "train_peak_mem"}
    assert memory["act_checkpoint"]["peer_impl"] == "ours_eager" and memory["act_checkpoint"]["input"][3:] == [128, 128]
    assert memory["act_checkpoint"]["ours"] < memory["act_checkpoint"]["peer"]
    assert memory["accumulation"]["ours"] < memory["accumulation"]["peer"]  # micro-batches of 1 instead of 2


def test_loglog_slope():
    assert loglog_slope([1, 2, 4, 8], [3, 12, 48, 192]) == pytest.approx(2.0)


def test_markdown_table():
    rows = [make_row(bench="model", case="train_step", impl="ours_fp32_vs_peer_fp32", metric="clips_per_s", ours=3.0, peer=2.0)]
    table = report.markdown_table(rows)
    assert table.splitlines()[0].startswith("| bench | case |")
    assert "**1.50×**" in table


@pytest.mark.parametrize("which", ["nonlocal", "scaling"])
def test_runner_quick_json(tmp_path, capsys, which):
    args = argparse.Namespace(which=which, json=True, device="cpu", quick=True, out=str(tmp_path))
    assert runner.main(args) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    saved = [json.loads(line) for line in (tmp_path / "bench.jsonl").read_text().splitlines()]
    assert printed == saved and all(r["bench"] == which for r in saved)
    assert (tmp_path / "bench.md").exists() and (tmp_path / f"{which}.png").exists()
    if which == "nonlocal":
        metrics = {r["metric"] for r in saved if r["case"] == "long_clip" and r["impl"] == "fused"}
        assert {"fwd_bwd_time", "fwd_bwd_peak_mem"} <= metrics
        assert all(r["method"] == common.MEMORY_METHODS["cpu"] for r in saved if r["metric"].endswith("_mem"))
    else:
        assert {r["impl"] for r in saved if r["metric"] == "mem_exponent"} == {"fused", "explicit", "gc", "latentgnn"}


def test_data_benches_quick_rows(tmp_path, capsys):
    """The loader rows (default decord first, then PyAV, then the pyslowfast protocol) and the test-decode counts on
    real generated videos."""
    args = argparse.Namespace(which="loader", json=True, device="cpu", quick=True, out=str(tmp_path / "loader"))
    assert runner.main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["bench"], r["metric"], r["backend"], r["protocol"], r["default"]) for r in rows] == [
        ("loader", "clips_per_s", "decord", "caffe2", True), ("loader", "clips_per_s", "pyav", "caffe2", False),
        ("loader", "clips_per_s", "decord", "pyslowfast", False)]
    assert all(r["ours"] > 0 and r["peer"] > 0 and r["better_by"] == r["ours"] / r["peer"] for r in rows)
    args = argparse.Namespace(which="test-decode", json=True, device="cpu", quick=True, out=str(tmp_path / "td"))
    assert runner.main(args) == 0
    frames = next(json.loads(line) for line in capsys.readouterr().out.splitlines()
                  if json.loads(line)["metric"] == "decoded_frames_per_video")
    # frame counts are deterministic: 30 views from one decode vs one decode per view
    assert frames["ours"] < 300 and frames["ratio"] <= 0.2 and frames["peer"] > 10 * frames["ours"]


def test_frame_index_bench_quick_rows(tmp_path, capsys):
    """Index cost per video for a scanned mp4 and a decoded AVI against counting by decode, and the list row."""
    args = argparse.Namespace(which="frame-index", json=True, device="cpu", quick=True, out=str(tmp_path))
    assert runner.main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["metric"], r.get("videos")) for r in rows] == [
        ("index_ms_per_video", 2), ("index_ms_per_video", 2), ("videos_per_s", None)]
    assert "packet scan" in rows[0]["case"] and "decoded" in rows[1]["case"] and rows[2]["case"].startswith("100 ")
    assert all(r["ours"] > 0 and r["peer"] > 0 for r in rows)
