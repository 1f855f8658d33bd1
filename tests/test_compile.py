"""TRAIN.COMPILE: compiled = eager numerics, no per-batch recompiles, checkpoints move between compiled and eager
runs, and one clear warning (then eager) where inductor cannot compile.

Inductor on CPU builds its kernels with g++: the first compile of the tiny model takes 1–3 minutes on 2 cores
(later ones hit inductor's on-disk cache), so the compiled tests are ``slow``; the two tests share one graph.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers.engine_runs import make_dataset, read_log, tiny_args, tiny_overrides, video_nl

from video_nl.config import load_config
from video_nl.engine import runtime
from video_nl.engine.checkpoint import list_checkpoints
from video_nl.engine.evaluate import view_probs
from video_nl.engine.precise_bn import update_bn_stats
from video_nl.engine.train import train
from video_nl.models import build_model

MISSING_CXX = "/nonexistent/bin/g++"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("videos"))


def compiled_config(data, out, **extra: object):
    """The engine tests' tiny I3D-NL without dropout, TRAIN.COMPILE default."""
    keys = {"MODEL.DROPOUT_RATE": 0.0, "TRAIN.COMPILE": "default", "TRAIN.EVAL_PERIOD": 0, "TEST.ENABLE": False,
            **extra}
    return load_config(None, tiny_overrides(data, out, **keys))


# ---------------------------------------------------------------------------------------------- fallback
def test_without_a_cxx_compiler_compile_warns_once_and_runs_eagerly(data, tmp_path, monkeypatch):
    from torch._inductor import config as inductor_config

    monkeypatch.setattr(runtime, "_warned", set())
    cpu = torch.device("cpu")
    cfg = compiled_config(data, tmp_path)
    with inductor_config.patch({"cpp.cxx": (None, MISSING_CXX)}):
        reason = runtime.compile_unavailable(cpu)
        assert reason and "C++ compiler" in reason and MISSING_CXX in reason
        # The condition is real: inductor itself cannot build a kernel with it.
        torch._dynamo.reset()
        with pytest.raises(Exception, match="(?i)compiler"):
            torch.compile(lambda x: x * 1.5 + 0.25)(torch.randn(3))
        torch._dynamo.reset()
        with pytest.warns(RuntimeWarning) as caught:
            models = [runtime.compile_model(cfg, build_model(cfg), device=cpu) for _ in range(2)]
    assert len(caught) == 1 and "running the model eagerly" in str(caught[0].message)
    assert not any(runtime.is_compiled(m) for m in models)
    assert runtime.compile_unavailable(cpu) is None  # g++ is back


def test_train_and_test_without_a_cxx_compiler_give_one_warning(data, tmp_path):
    out = tmp_path / "run"
    result = video_nl("train", *tiny_args(data, out, **{"TRAIN.COMPILE": "default", "SOLVER.MAX_EPOCH": 1}),
                      extra_env={"CXX": MISSING_CXX})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("running the model eagerly") == 1, result.stderr[-3000:]
    assert json.loads((out / "test" / "summary.json").read_text())["num_videos"] == 5
    records = [r for r in read_log(out) if r["_type"] == "compile"]
    assert records and not any(r["compiled"] or r["compiled_graphs"] for r in records)


# ---------------------------------------------------------------------------------------------- compiled
@pytest.mark.slow
def test_compiled_model_matches_eager_and_compiles_each_shape_once(data, tmp_path):
    cfg = compiled_config(data, tmp_path, **{"DATA.TEST_CROP_SIZE": 48})
    info = runtime.setup(cfg)  # the training runs' deterministic flags: inductor's cache key includes them
    eager = build_model(cfg)
    for name, p in eager.named_parameters():  # non-trivial BN γ, also in the non-local block
        if "bn" in name and name.endswith("weight"):
            torch.nn.init.uniform_(p, 0.5, 1.5)
    compiled = runtime.compile_model(cfg, copy.deepcopy(eager), device=info.device)
    assert runtime.is_compiled(compiled) and not runtime.is_compiled(eager)
    x = torch.randn(2, 3, 4, 32, 32)
    labels = torch.tensor([0, 1])
    logits = []
    for model in (compiled, eager):
        model.train()
        out = model(x)
        torch.nn.functional.cross_entropy(out, labels).backward()
        logits.append(out.detach())
    scale = float(logits[1].abs().max())
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=1e-4 * scale)
    grad_scale = max(float(p.grad.abs().max()) for p in eager.parameters())
    for (name, a), b in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-4 * grad_scale, msg=name)
    for (name, a), b in zip(compiled.named_buffers(), eager.buffers()):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-4, atol=1e-5, msg=name)
    assert compiled.state_dict().keys() == eager.state_dict().keys()

    # Precise BN's hooks run the compiled model eagerly: the same statistics, no new graph.
    graphs = runtime.compile_stats()["compiled_graphs"]
    for model in (compiled, eager):
        assert update_bn_stats(model, [x, 2 * x], num_batches=2) == 2
    for (name, a), b in zip(compiled.named_buffers(), eager.buffers()):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-5, atol=1e-6, msg=name)
    assert runtime.compile_stats()["compiled_graphs"] == graphs

    # Fully-convolutional test views (48 px > the 32 px training window): 3 views in chunks of 2 are padded
    # to one shape, so the eval pass compiles once and the next video reuses it.
    before = runtime.compile_stats()
    for model in (compiled, eager):
        model.eval()
    for video in range(2):
        views = torch.randn(3, 3, 4, 48, 48)
        probs = [view_probs(m, views, chunk=2, device=info.device, autocast=runtime.autocast(cfg, info.device))
                 for m in (compiled, eager)]
        torch.testing.assert_close(probs[0], probs[1], rtol=0, atol=1e-4)
        stats = runtime.compile_stats()
        assert stats["compiled_graphs"] == before["compiled_graphs"] + 1, (video, stats)
        assert stats["recompiles"] == before["recompiles"] + 1, (video, stats)  # train -> eval mode, 48 px
    assert stats["graph_breaks"] == 0


@pytest.mark.slow
def test_compiled_run_resumes_eagerly_and_back(data, tmp_path):
    mixed, eager = tmp_path / "mixed", tmp_path / "eager"
    # Epoch 1 compiled, 2 eager (resumed from the compiled run's checkpoint), 3 compiled again; the reference
    # makes the same three resumed runs eagerly (the cosine LR follows each run's SOLVER.MAX_EPOCH).
    for epochs, mode in ((1, "default"), (2, "none"), (3, "default")):
        for out, run_mode in ((mixed, mode), (eager, "none")):
            cfg = compiled_config(data, out, **{"TRAIN.COMPILE": run_mode, "SOLVER.MAX_EPOCH": epochs})
            train(cfg, runtime.setup(cfg))
            state = torch.load(list_checkpoints(str(out))[-1], weights_only=True)
            assert state["epoch"] == epochs
            assert not [k for k in state["model_state"] if "_orig_mod" in k or k.startswith("module.")]
    final = [torch.load(list_checkpoints(str(out))[-1], weights_only=True)["model_state"] for out in (mixed, eager)]
    assert final[0].keys() == final[1].keys()
    for key, value in final[1].items():
        # Compiled and eager steps differ by fp32 rounding (~1e-7), which 12 SGD steps grow to ~5e-5 of a
        # tensor's scale here; resuming from a wrong state (or another LR schedule) is off by > 1e-3. The
        # floor covers the conv biases before BN, which get no gradient (values ~1e-12).
        if value.is_floating_point():
            torch.testing.assert_close(final[0][key], value, rtol=1e-3, atol=1e-3 * float(value.abs().max()) + 1e-6,
                                       msg=key)
        else:
            assert torch.equal(final[0][key], value), key
    records = [r for r in read_log(mixed) if r["_type"] == "compile"]
    assert len(records) == 2 and all(r["compiled"] and r["mode"] == "default" for r in records)
