"""The engine on CUDA with real mp4 files: AMP fp16 with GradScaler (its skip-on-inf and our non-finite-loss skip),
checkpoints moved CUDA → CPU → CUDA, ``predict`` and ``visualize`` with ``DEVICE cuda``, torchrun with NCCL."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers.engine_runs import make_dataset, read_log, tiny_args, tiny_overrides, torchrun, video_nl

from video_nl.config import load_config
from video_nl.engine import distributed as du
from video_nl.engine import train as engine_train
from video_nl.engine.checkpoint import list_checkpoints
from video_nl.engine.logging import prepare_output_dir
from video_nl.engine.runtime import load_model
from video_nl.errors import UserError
from video_nl.utils.io import safe_torch_load

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def fp16_run(data, tmp_path_factory):
    """A 2-epoch fp16 AMP run on the GPU (precise BN, validation, 2-view test)."""
    out = tmp_path_factory.mktemp("fp16")
    result = video_nl("train", *tiny_args(data, out, **{"DEVICE": "cuda", "TRAIN.MIXED_PRECISION": "fp16"}))
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_fp16_amp_run_trains_validates_tests_and_saves_the_scaler(fp16_run):
    records = read_log(fp16_run)
    losses = [r["loss"] for r in records if r["_type"] == "train_iter"]
    assert len(losses) == 8 and all(loss == loss and abs(loss) < 1e3 for loss in losses)
    assert [r["_type"] for r in records].count("val_epoch") == 2 and records[-1]["_type"] == "test_final"
    state = safe_torch_load(list_checkpoints(str(fp16_run))[-1])
    assert state["scaler_state"]["scale"] > 0
    assert all(t.device.type == "cpu" for t in state["model_state"].values())  # loads on a GPU-less machine
    assert "cuda" in state["rng_state"][0]


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_fp16_step_grad_scaler_skips_inf_gradients_and_nonfinite_losses_are_skipped(data, tmp_path):
    cfg = load_config(None, tiny_overrides(data, tmp_path / "run", **{
        "DEVICE": "cuda", "TRAIN.MIXED_PRECISION": "fp16", "TRAIN.SKIP_NONFINITE": True, "MODEL.DROPOUT_RATE": 0.0,
        "TRAIN.DETERMINISTIC": False}))  # (setup would switch deterministic algorithms on for the whole session)
    info = engine_train.setup(cfg)
    prepare_output_dir(cfg, info)
    run = engine_train.build_run(cfg, info)
    try:
        assert isinstance(run.scaler, torch.amp.GradScaler)
        state = run.scaler.state_dict()
        gen = torch.Generator().manual_seed(0)
        batch = {"video": torch.randn(2, 3, 4, 32, 32, generator=gen), "label": torch.tensor([0, 1]), "failures": []}

        run.scaler.load_state_dict({**state, "scale": 1024.0})  # a scale under which nothing overflows
        before = _params(run.model)
        result = engine_train.train_step(run, batch)
        assert not result.skipped and run.scaler.get_scale() == 1024.0
        assert any(not torch.equal(before[n], p) for n, p in run.model.named_parameters())

        run.scaler.load_state_dict({**state, "scale": 2.0 ** 40})  # fp16 gradients overflow: the scaler skips
        before = _params(run.model)
        result = engine_train.train_step(run, batch)
        assert not result.skipped and run.skipped_steps == 0  # the loss itself was finite
        assert run.scaler.get_scale() == 2.0 ** 39  # backed off by 0.5
        assert all(torch.equal(before[n], p) for n, p in run.model.named_parameters())

        nan_batch = {**batch, "video": torch.full_like(batch["video"], float("nan"))}
        result = engine_train.train_step(run, nan_batch)
        assert result.skipped and run.skipped_steps == 1 and run.scaler.get_scale() == 2.0 ** 39
        assert all(torch.equal(before[n], p) for n, p in run.model.named_parameters())
        run.cfg.TRAIN.SKIP_NONFINITE = False
        with pytest.raises(UserError, match="NaN/inf"):
            engine_train.train_step(run, nan_batch)
    finally:
        run.stats.close()


def test_checkpoint_saved_on_cuda_resumes_on_cpu_and_back(data, tmp_path):
    out = tmp_path / "moves"
    common = {"TEST.ENABLE": False, "TRAIN.EVAL_PERIOD": 0}
    for device, epochs in (("cuda", 1), ("cpu", 2), ("cuda", 3)):
        result = video_nl("train", *tiny_args(data, out, **{**common, "DEVICE": device, "SOLVER.MAX_EPOCH": epochs}))
        assert result.returncode == 0, result.stderr[-4000:]
        if epochs > 1:
            assert f"resumed from {out / 'checkpoints' / f'checkpoint_epoch_{epochs - 1:05d}.pyth'}" in result.stdout
    final = list_checkpoints(str(out))[-1]
    assert final.endswith("checkpoint_epoch_00003.pyth")
    cfg = load_config(None, tiny_overrides(data, out, **common))
    x = torch.randn(2, 3, 4, 32, 32)
    logits = {}
    for device in ("cpu", "cuda"):
        info = du.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device(device))
        model = load_model(cfg, info, final)
        with torch.no_grad():
            logits[device] = model(x.to(device)).float().cpu()
    scale = logits["cpu"].abs().max()
    assert (logits["cuda"] - logits["cpu"]).abs().max() <= 1e-3 * scale


def test_predict_and_visualize_with_device_cuda_match_the_cpu(data, fp16_run, tmp_path):
    video = (data / "test.csv").read_text().split()[0]
    ckpt = list_checkpoints(str(fp16_run))[-1]
    predictions, reports = {}, {}
    for device in ("cpu", "cuda"):
        args = [*tiny_args(data, fp16_run, **{"DEVICE": device, "TRAIN.MIXED_PRECISION": "none"}), "--checkpoint", ckpt]
        result = video_nl("predict", *args, "--video", video, "--topk", "2", "--json")
        assert result.returncode == 0, result.stderr[-4000:]
        predictions[device] = json.loads(result.stdout)["predictions"]
        out = tmp_path / f"viz_{device}"
        result = video_nl("visualize", *args, "--video", video, "--out", str(out), "--query", "1,10,20",
                          "--query", "3,30,5")
        assert result.returncode == 0, result.stderr[-4000:]
        reports[device] = json.loads((out / "attention.json").read_text())
        assert (out / f"{reports[device]['blocks'][0]['name']}_q0.png").stat().st_size > 0
    scores = {device: {p["class"]: p["score"] for p in top} for device, top in predictions.items()}
    assert scores["cuda"].keys() == scores["cpu"].keys() == {0, 1}  # two classes, top 2
    assert all(abs(scores["cuda"][c] - scores["cpu"][c]) < 1e-3 for c in (0, 1))  # probabilities: scale 1
    cpu_blocks, gpu_blocks = reports["cpu"]["blocks"], reports["cuda"]["blocks"]
    assert [b["name"] for b in gpu_blocks] == [b["name"] for b in cpu_blocks] and len(cpu_blocks) == 1
    for cpu_q, gpu_q in zip(cpu_blocks[0]["queries"], gpu_blocks[0]["queries"]):
        assert cpu_q["feature_cell"] == gpu_q["feature_cell"]
        cpu_w, gpu_w = [t["weight"] for t in cpu_q["top"]], [t["weight"] for t in gpu_q["top"]]
        assert max(abs(a - b) for a, b in zip(cpu_w, gpu_w)) < 1e-4  # sorted weights: ties may swap positions


def test_torchrun_with_nccl(data, tmp_path):
    """One process per GPU, at most two. With one GPU the world has one rank, which needs no process group, so
    this checks the torchrun launch, LOCAL_RANK → cuda:0 and the outputs; NCCL itself runs with two GPUs."""
    nproc = min(torch.cuda.device_count(), 2)
    extra = {"DEVICE": "cuda", "DIST_BACKEND": "nccl", "TEST.NUM_SPATIAL_CROPS": 3}
    if nproc > 1:
        extra["BN.NORM_TYPE"] = "sync_batchnorm"
    out = tmp_path / "run"
    result = torchrun(nproc, "train", *tiny_args(data, out, **extra))
    assert result.returncode == 0, result.stderr[-4000:]
    assert [p.rsplit("/", 1)[1] for p in list_checkpoints(str(out))] == \
        ["checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth"]
    preds = json.loads((out / "test" / "predictions.json").read_text())
    assert sorted(p["index"] for p in preds) == [0, 1, 2, 3, 4]
    summary = json.loads((out / "test" / "summary.json").read_text())
    assert summary["num_videos"] == 5 and summary["views"] == 6


def test_a_copied_cuda_run_directory_resumes_on_the_gpu(fp16_run, data, tmp_path):
    """Auto-resume of an fp16 run (scaler state and CUDA RNG states restored) in a copy of its folder."""
    out = tmp_path / "copy"
    shutil.copytree(fp16_run, out)
    result = video_nl("train", *tiny_args(data, out, **{"DEVICE": "cuda", "TRAIN.MIXED_PRECISION": "fp16",
                                                        "SOLVER.MAX_EPOCH": 3, "TEST.ENABLE": False}))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "resumed from" in result.stdout and "checkpoint_epoch_00002.pyth" in result.stdout
    assert list_checkpoints(str(out))[-1].endswith("checkpoint_epoch_00003.pyth")
