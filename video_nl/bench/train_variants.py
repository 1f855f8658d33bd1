"""Train-step variants of ``bench model``: ours eager / compiled / act-checkpointed / accumulated vs PyTorchVideo
at its best, with peak memory and the achieved FLOP/s against a GEMM measured in the same run.

Everything runs in the device's recommended precision (:func:`video_nl.bench.model_bench.comparisons`' first
setup: bf16 autocast + channels_last_3d where bf16 is fast, else fp32). Our steps go through the engine's own
code: the model from ``build_model`` (``MODEL.ACT_CHECKPOINT``), ``runtime.compile_model`` (``TRAIN.COMPILE
default``) and ``train.accumulate_gradients`` (``TRAIN.ACCUM_STEPS``, autocast, loss), then the SGD step.
Where that precision is bf16, ours also runs compiled in fp32 (``compiled_fp32``) for the fp32 FLOP/s.
The peer runs eager and compiled (``torch.compile`` of the whole network, if it compiles); its best is the
faster of the two. Rows (``bench model``):

* ``train_variants`` / ``clips_per_s`` and ``train_peak_mem``: each of our variants vs the peer at its best
  (``ours_best_vs_peer_best`` first: the fastest of our eager and compiled steps, with ``gflop_per_s`` and
  ``fraction_of_gemm``: 3 × forward FLOPs per clip × clips/s over an n×n×n GEMM rate of the same precision
  measured in this run);
* ``utilisation`` / ``gflop_per_s``: our fastest step per precision vs that precision's GEMM rate
  (``better_by`` is the fraction of the GEMM rate achieved);
* ``act_checkpoint`` / ``train_peak_mem`` and ``train_step_time``: ``MODEL.ACT_CHECKPOINT all`` vs the same
  model without it (``peer_impl`` ``ours_eager``), and ``accumulation`` (same metrics): ``TRAIN.ACCUM_STEPS 2``
  (2 micro-batches of 1) vs one batch of 2 — on a 2× larger crop (8×224² in the full run), where activations
  dominate the step's memory as in real training (at 8×112², batch 2, the R50's gradients and its bf16 weight
  copies, ~210 MiB, are most of the peak whatever the activations).

Compiling the R50 on CPU takes minutes on a cold inductor cache (seconds once cached), so ``--quick`` leaves
the compiled variants out.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..engine.runtime import compile_model, compile_stats
from ..engine.losses import Criterion
from ..engine.train import accumulate_gradients
from .common import MEMORY_METHODS, Stats, gemm_gflops, make_row, peak_memory, time_interleaved

MIB = 2.0**20


def variant_config(cfg: Any, *, bf16: bool, compile_mode: str = "none", act_checkpoint: str = "none",
                   accum_steps: int = 1) -> Any:
    """A copy of ``cfg`` with the precision and the speed/memory keys of one variant."""
    out = copy.deepcopy(cfg)
    out.TRAIN.MIXED_PRECISION = "bf16" if bf16 else "none"
    out.TRAIN.COMPILE, out.TRAIN.ACCUM_STEPS, out.MODEL.ACT_CHECKPOINT = compile_mode, accum_steps, act_checkpoint
    return out


def ours_step_fn(cfg: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One optimizer step the way ``video-nl train`` takes it (``accumulate_gradients`` + SGD)."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)
    criterion = Criterion(loss_func="cross_entropy", num_classes=cfg.MODEL.NUM_CLASSES)

    def run() -> None:
        model.train()
        accumulate_gradients(cfg, model, x, y, criterion=criterion, device=x.device)
        opt.step()
    return run


def _warm(fns: dict[str, Callable[[], object]]) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Call each function once (compiling the compiled ones); drop those that fail. Returns why they failed
    and, per compiled function, the TorchDynamo graphs, graph breaks and recompiles its first call caused."""
    failed, compiled = {}, {}
    for name, fn in list(fns.items()):
        before = compile_stats()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a peer that does not compile is a result, not a crash
            failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            del fns[name]
        after = compile_stats()
        if after["compiled_graphs"] > before["compiled_graphs"]:
            compiled[name] = {k: after[k] - before[k] for k in ("compiled_graphs", "graph_breaks", "recompiles")}
    return failed, compiled


def run_variants(*, cfg: Any, ours: nn.Module, peer: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 x_memory: torch.Tensor, setup: Any, peer_step_fn: Callable[..., Callable[[], None]],
                 step_gflop: float, warmup: int, repeats: int, quick: bool) -> list[dict[str, Any]]:
    """The rows described in the module docstring: our variants of ``ours`` (built from ``cfg``) and the peer
    (stepped by ``peer_step_fn(model, x, y, bf16=...)``), all in ``setup`` (a ``model_bench.Setup``);
    ``x_memory`` is the larger clip batch (same batch size as ``x``) of the ``act_checkpoint``/``accumulation``
    rows. ``quick``: no compiled variants, one round without warm-up on the larger clip."""
    from ..models.build import build_model

    device = x.device
    variants: dict[str, tuple[dict[str, Any], Any]] = {
        "eager": ({}, setup), "act_checkpoint": ({"act_checkpoint": "all"}, setup),
        "accum2": ({"accum_steps": 2}, setup)}
    if not quick:
        variants["compiled"] = ({"compile_mode": "default"}, setup)
        if setup.bf16:  # for the fp32 FLOP/s against sgemm
            variants["compiled_fp32"] = ({"compile_mode": "default"},
                                         dataclasses.replace(setup, bf16=False, channels_last=False))
    fns: dict[str, Callable[[], object]] = {}
    big: dict[str, Callable[[], object]] = {}
    xb = x_memory.contiguous(memory_format=torch.channels_last_3d) if setup.channels_last else x_memory
    for name, (keys, vsetup) in variants.items():
        vcfg = variant_config(cfg, bf16=vsetup.bf16, **keys)
        model = build_model(vcfg).to(device)
        model.load_state_dict(ours.state_dict())
        model, xs = vsetup.prepare(model, x)
        fns[f"ours_{name}"] = ours_step_fn(vcfg, compile_model(vcfg, model, device=device), xs, y)
        if vcfg.TRAIN.COMPILE == "none":  # the head global-pools in training: the same model takes the larger clip
            big[f"ours_{name}"] = ours_step_fn(vcfg, model, xb, y)
    for name in ("eager",) if quick else ("eager", "compiled"):
        model, xs = setup.prepare(peer, x)
        fns[f"peer_{name}"] = peer_step_fn(torch.compile(model) if name == "compiled" else model, xs, y,
                                           bf16=setup.bf16)
    failed, compiled = _warm(fns)
    times = time_interleaved(fns, device=device, warmup=max(warmup - 1, 0), repeats=repeats)
    memory = {name: peak_memory(fn, device=device) / MIB for name, fn in fns.items()}
    rows = _variant_rows(times, memory, failed=failed, compiled=compiled, batch=len(x), step_gflop=step_gflop,
                         setup=setup, device=device)
    big_times = time_interleaved(big, device=device, warmup=0 if quick else 1, repeats=1 if quick else 3)
    big_memory = {name: peak_memory(fn, device=device) / MIB for name, fn in big.items()}
    return rows + _memory_rows(big_times, big_memory, setup=setup, device=device, size=list(x_memory.shape))


def _best(times: dict[str, Stats], side: str) -> str:
    return min((n for n in times if n.startswith(side + "_")), key=lambda n: times[n].median)


def _variant_rows(times: dict[str, Stats], memory: dict[str, float], *, failed: dict[str, str],
                  compiled: dict[str, dict[str, int]], batch: int, step_gflop: float, setup: Any,
                  device: torch.device) -> list[dict[str, Any]]:
    """``train_variants`` rows: ours at its best (with FLOP/s over the GEMM rate), then each variant, vs the peer
    at its best, in clips/s and in peak memory."""
    best_ours = _best({n: t for n, t in times.items() if n in ("ours_eager", "ours_compiled", "ours_compiled_fp32")},
                      "ours")
    best_peer = _best(times, "peer")
    extra = {"setup": setup.describe(), "device": device.type, "peer_variant": best_peer.removeprefix("peer_"),
             "peer_clips_per_s": {n.removeprefix("peer_"): batch / t.median for n, t in times.items()
                                  if n.startswith("peer_")},
             **({"compile": compiled} if compiled else {}), **({"failed": failed} if failed else {})}
    gemm = {"fp32": gemm_gflops(device=device, dtype=torch.float32, repeats=10)}
    if setup.bf16:
        gemm["bf16"] = gemm_gflops(device=device, dtype=torch.bfloat16, repeats=10)
    dtype = "fp32" if best_ours == "ours_compiled_fp32" or not setup.bf16 else "bf16"
    achieved = step_gflop / times[best_ours].median  # step_gflop covers the whole batch
    rows = [make_row(bench="model", case="train_variants", impl="ours_best_vs_peer_best", metric="clips_per_s",
                     ours=times[best_ours].inverted(batch), peer=times[best_peer].inverted(batch),
                     ours_variant=best_ours.removeprefix("ours_"), gflop_per_step=step_gflop, gflop_per_s=achieved,
                     gemm_gflop_per_s=gemm[dtype], gemm_dtype=dtype, fraction_of_gemm=achieved / gemm[dtype],
                     **extra)]
    ours = [n for n in times if n.startswith("ours_")]
    rows += [make_row(bench="model", case="train_variants", impl=f"{name}_vs_peer_best", metric="clips_per_s",
                      ours=times[name].inverted(batch), peer=times[best_peer].inverted(batch), **extra)
             for name in ours]
    rows += [make_row(bench="model", case="train_variants", impl=f"{name}_vs_peer_best", metric="train_peak_mem",
                      ours=memory[name], peer=memory[best_peer], method=MEMORY_METHODS[device.type], **extra)
             for name in ours]
    # Achieved FLOP/s of our fastest step in each precision over that precision's GEMM rate (better_by = fraction).
    for precision, names in (("fp32", ("ours_compiled_fp32",) if setup.bf16 else ("ours_eager", "ours_compiled")),
                             ("bf16", ("ours_eager", "ours_compiled") if setup.bf16 else ())):
        timed = [n for n in names if n in times]
        if timed:
            name = min(timed, key=lambda n: times[n].median)
            rows.append(make_row(bench="model", case="utilisation", impl=f"{name}_vs_{precision}_gemm",
                                 metric="gflop_per_s", ours=step_gflop / times[name].median,
                                 peer=gemm[precision], gflop_per_step=step_gflop, setup=extra["setup"],
                                 device=device.type))
    return rows


def _memory_rows(times: dict[str, Stats], memory: dict[str, float], *, setup: Any, device: torch.device,
                 size: list[int]) -> list[dict[str, Any]]:
    """``act_checkpoint`` (memory and step time) and ``accumulation`` (memory) rows against our eager step."""
    extra = {"input": size, "setup": setup.describe(), "device": device.type, "peer_impl": "ours_eager",
             "method": MEMORY_METHODS[device.type]}
    rows = []
    for case, name in (("act_checkpoint", "ours_act_checkpoint"), ("accumulation", "ours_accum2")):
        if name in times and "ours_eager" in times:
            impl = name.removeprefix("ours_")
            rows.append(make_row(bench="model", case=case, impl=impl, metric="train_peak_mem", ours=memory[name],
                                 peer=memory["ours_eager"], **extra))
            rows.append(make_row(bench="model", case=case, impl=impl, metric="train_step_time",
                                 ours=times[name].scaled(1e3), peer=times["ours_eager"].scaled(1e3), **extra))
    return rows
