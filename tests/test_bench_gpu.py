"""The ``--device cuda`` parts of the benches, run on the CPU: bf16 non-local rows, the GPU train-step figures
(TFLOP/s against an in-run bf16 GEMM, peak memory per clip), the batch choice and cuDNN autotuning's restore."""
from __future__ import annotations

import pytest
import torch

from video_nl.bench import model_bench, nonlocal_bench
from video_nl.bench.common import MEMORY_METHODS
from video_nl.bench.model_bench import FP32, RECOMMENDED, GpuWorkload, build_ours, build_peer, case_fns, impl_name
from video_nl.bench.nonlocal_bench import PEER, Case, make_blocks

CPU = torch.device("cpu")
TINY = Case(batch=1, dim=16, size=(2, 4, 4), key_pool=(1, 2, 2), repeats=1)


def test_bf16_nonlocal_rows_are_named_after_their_precision():
    blocks = make_blocks(TINY, device=CPU)
    x = torch.randn(1, 16, 2, 4, 4)
    rows = nonlocal_bench._precision_rows("tiny", TINY, blocks, x, torch.randn_like(x), suffix="_bf16",
                                          dtype=torch.bfloat16, device=CPU, extra={"precision": "bf16 autocast"})
    impls = {"fused_bf16", "explicit_bf16", "gc_bf16", "latentgnn_bf16"}
    for metric in ("fwd_time", "fwd_bwd_time", "fwd_bwd_peak_mem"):
        assert {r["impl"] for r in rows if r["metric"] == metric} == impls
    assert all(r["peer_impl"] == PEER + "_bf16" and r["precision"] == "bf16 autocast" for r in rows)
    assert all(r["ours"] > 0 and r["peer"] > 0 for r in rows)
    assert {r["method"] for r in rows if r["metric"] == "fwd_bwd_peak_mem"} == {MEMORY_METHODS["cpu"]}


def test_cpu_nonlocal_rows_stay_fp32_only():
    rows = nonlocal_bench.run_case("tiny", TINY, device=CPU)
    assert {r["precision"] for r in rows} == {"fp32"} and not any(r["impl"].endswith("_bf16") for r in rows)
    assert {r["impl"] for r in rows if "max_abs_diff" in r} == {"fused", "explicit"}


def test_gpu_train_figures_on_a_tiny_model(monkeypatch):
    monkeypatch.setattr(model_bench, "GEMM_N", 256)  # the reference GEMM, small enough for the CPU
    torch.manual_seed(0)
    ours, peer = build_ours(frames=4, crop=32, width=4), build_peer(frames=4, crop=32, width=4)
    x, y = torch.randn(2, 3, 4, 32, 32), torch.tensor([1, 2])
    pairs = [(RECOMMENDED, FP32)]
    sides = [("ours", RECOMMENDED), ("peer", FP32)]
    fns = case_fns("train_step", ours, peer, x, y, sides)
    rows = [model_bench.make_row(bench="model", case="train_step", impl=impl_name(o, p), metric="clips_per_s",
                                 ours=4.0, peer=2.0) for o, p in pairs]
    mem_rows = model_bench.gpu_train_figures(rows, fns, pairs, model=ours, x=x, device=CPU, extra={"device": "cpu"})
    assert [(r["impl"], r["metric"], r["unit"]) for r in mem_rows] == [
        (impl_name(o, p), "train_peak_mem_per_clip", "MiB") for o, p in pairs]
    assert all(r["ours"] > 0 and r["peer"] > 0 and r["better_by"] == r["peer"] / r["ours"] for r in mem_rows)
    for row in rows:
        assert row["ours_tflop_per_s"] == pytest.approx(row["gflop_per_step"] * 4.0 / 2 / 1e3)
        assert row["fraction_of_bf16_gemm"] == pytest.approx(row["ours_tflop_per_s"] / row["bf16_gemm_tflop_per_s"])
        assert row["peer_fraction_of_bf16_gemm"] == pytest.approx(row["fraction_of_bf16_gemm"] / 2)
    assert rows[0]["gflop_per_step"] > 0 and rows[0]["bf16_gemm_tflop_per_s"] > 0


def test_gpu_batch_fills_about_half_the_free_memory():
    gib = 2**30
    workload = GpuWorkload()
    assert workload.pick(per_clip_bytes=1.5 * gib, free_bytes=135 * gib) == 32
    assert workload.pick(per_clip_bytes=3 * gib, free_bytes=135 * gib) == 16
    assert workload.pick(per_clip_bytes=1.5 * gib, free_bytes=22 * gib) == 4
    assert workload.pick(per_clip_bytes=40 * gib, free_bytes=22 * gib) == 2


def test_cudnn_autotune_is_restored():
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with model_bench.cudnn_autotune(True):
            assert torch.backends.cudnn.benchmark
        assert not torch.backends.cudnn.benchmark
        with model_bench.cudnn_autotune(False):
            assert not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = saved
