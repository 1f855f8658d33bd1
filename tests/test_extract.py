"""`video-nl extract-features` on real mp4 files: features equal the model's own forward on the same views,
corrupt videos are reported and skipped, 2 gloo ranks give the 1-rank array, and a killed run resumes to the
same array.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import json

import numpy as np
import pytest
import torch
from helpers.engine_runs import kill_when_written, make_dataset, tiny_args, torchrun, video_nl
from helpers.models import trained_like_

from video_nl.config import load_config
from video_nl.engine import distributed as du
from video_nl.engine.extract import (LayerTaps, Request, check_layers, extract_features, fingerprint, prepare_shards,
                                     resolve_source)
from video_nl.engine.predict import video_views
from video_nl.errors import UserError
from video_nl.models.build import build_model

INFO = du.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
NUM_VIDEOS = 6


def close(a: np.ndarray, b: np.ndarray | torch.Tensor, tol: float = 1e-5) -> bool:
    """Equal within ``tol`` of ``b``'s scale (fp32 round-off differs between CPUs and thread counts)."""
    b = np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and float(np.abs(a - b).max()) <= tol * max(float(np.abs(b).max()), 1e-12)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("videos"), train=0, val=0, test=NUM_VIDEOS)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """(CLI args, cfg, checkpoint path) of a trained-looking tiny I3D with a non-local block in res3."""
    args = tiny_args(data, tmp_path_factory.mktemp("run"))
    cfg = load_config(args[1], args[2:])
    path = tmp_path_factory.mktemp("ckpt") / "trained.pyth"
    torch.save({"model_state": trained_like_(build_model(cfg)).state_dict()}, path)
    return args, cfg, str(path)


def extract(cfg, ckpt: str, out, *, layers=("res5",), views=(2, 1), per_clip=False, shard_size=2, **kwargs) -> dict:
    source = kwargs.pop("source", None) or resolve_source(cfg, list_file=None, split="test", video=None)
    request = Request(layers=tuple(layers), clips=views[0], crops=views[1], per_clip=per_clip, shard_size=shard_size)
    return extract_features(cfg, INFO, checkpoint=ckpt, source=source, request=request, out=str(out), **kwargs)


def read_index(out) -> list[dict]:
    with open(out / "index.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def reference(trained, tmp_path_factory):
    """One uninterrupted single-process extraction of the test split (res5, 2 clips averaged)."""
    _, cfg, ckpt = trained
    out = tmp_path_factory.mktemp("reference")
    extract(cfg, ckpt, out)
    return out


def test_features_equal_forward_features_and_the_hooked_block_on_the_same_views(trained, data, tmp_path):
    _, cfg, ckpt = trained
    (tmp_path / "two.csv").write_text("".join((data / "test.csv").read_text().splitlines(True)[:2]))
    source = resolve_source(cfg, list_file=str(tmp_path / "two.csv"), split=None, video=None)
    meta = extract(cfg, ckpt, tmp_path, layers=("res5", "s3.nl1", "s2", "logits", "probs"), views=(2, 3),
                   per_clip=True, source=source)
    assert meta["layers"]["res5"]["shape"] == [2, 6, 32] and meta["layers"]["s3.nl1"]["shape"] == [2, 6, 8]
    assert meta["views"] == {"clips": 2, "crops": 3, "per_clip": True, "crop_size": 32, "num_frames": 4,
                             "sampling_rate": 2}
    features = {name: np.load(tmp_path / m["file"]) for name, m in meta["layers"].items()}
    model = build_model(cfg).eval()
    model.load_state_dict(torch.load(ckpt, weights_only=True)["model_state"])
    view_cfg = copy.deepcopy(cfg)
    view_cfg.TEST.NUM_SPATIAL_CROPS = 3
    index = read_index(tmp_path)
    assert [r["row"] for r in index] == ["0", "1"] and {r["views"] for r in index} == {"6"}
    for i, row in enumerate(index):
        views = video_views(view_cfg, row["path"])  # decoded again, through predict's own path
        with torch.no_grad():
            x = model.pool2(model.s2(model.stem(views)))
            for name, child in model.s3.named_children():
                x = child(x)
                if name == "nl1":
                    break
            logits = model(views)
            assert close(features["res5"][i], model.forward_features(views))
            assert close(features["s3.nl1"][i], x.mean(dim=(2, 3, 4)))
            assert close(features["s2"][i], model.s2(model.stem(views)).mean(dim=(2, 3, 4)))
            assert close(features["logits"][i], logits)
            assert close(features["probs"][i], torch.softmax(logits, dim=1))
    averaged = extract(cfg, ckpt, tmp_path / "avg", layers=("res5", "probs"), views=(2, 3), dtype="float16",
                       source=source)
    assert averaged["layers"]["res5"] == {"file": "features_res5.npy", "shape": [2, 32], "dtype": "float16"}
    half = np.load(tmp_path / "avg" / "features_res5.npy")
    assert half.dtype == np.float16 and close(half.astype(np.float64), features["res5"].mean(axis=1), tol=2e-3)
    probs = np.load(tmp_path / "avg" / "features_probs.npy")
    assert close(probs.astype(np.float64), features["probs"].mean(axis=1), tol=2e-3) and np.allclose(probs.sum(axis=1), 1, atol=1e-3)


def test_one_video_bf16_channels_last_and_layer_names(trained, reference, tmp_path):
    _, cfg, ckpt = trained
    video = read_index(reference)[3]["path"]
    extract(cfg, ckpt, tmp_path, source=resolve_source(cfg, list_file=None, split=None, video=video))
    assert close(np.load(tmp_path / "features_res5.npy"), np.load(reference / "features_res5.npy")[3:4])
    assert read_index(tmp_path) == [{"row": "0", "path": video, "label": "", "views": "2", "ok": "1", "failure": ""}]
    fast = copy.deepcopy(cfg)  # the test-time speed settings apply: bf16 autocast on channels-last tensors
    fast.TRAIN.MIXED_PRECISION, fast.TRAIN.CHANNELS_LAST = "bf16", True
    meta = extract(fast, ckpt, tmp_path / "bf16", source=resolve_source(cfg, list_file=None, split=None, video=video))
    assert meta["precision"] == "bf16" and meta["channels_last"] is True
    assert close(np.load(tmp_path / "bf16" / "features_res5.npy"), np.load(tmp_path / "features_res5.npy"), tol=0.05)
    model = build_model(cfg)
    assert check_layers(model, ["s4", "s3.nl1", "s4", "logits"]) == ("s4", "s3.nl1", "logits")
    with pytest.raises(UserError, match=r"Unknown --layer s9.*valid: res5, logits, probs, stem, s2, s2.block0"):
        check_layers(model, ["s9"])


def test_a_corrupt_video_is_reported_and_skipped_in_an_unlabelled_list(trained, reference, data, tmp_path):
    args, cfg, ckpt = trained
    videos = [r["path"] for r in read_index(reference)]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (tmp_path / "list.txt").write_text(f"{videos[0]}\n{corrupt} 1\n{videos[1]} 0\n")
    out = tmp_path / "out"
    result = video_nl("extract-features", *args, "--checkpoint", ckpt, "--list", str(tmp_path / "list.txt"),
                      "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"failed to load {corrupt}" in result.stdout and "(3 videos, 1 failed)" in result.stdout
    index = read_index(out)
    assert [(r["row"], r["path"], r["label"], r["views"], r["ok"]) for r in index] == [
        ("0", videos[0], "", "2", "1"), ("", str(corrupt), "1", "0", "0"), ("1", videos[1], "0", "2", "1")]
    assert index[1]["failure"]
    reference_rows = np.load(reference / "features_res5.npy")
    assert close(np.load(out / "features_res5.npy"), reference_rows[:2])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num_failed"] == 1 and meta["failed"][0]["path"] == str(corrupt) and not (out / "shards").exists()
    kept = extract(cfg, ckpt, tmp_path / "kept", keep_failed=True,
                   source=resolve_source(cfg, list_file=str(tmp_path / "list.txt"), split=None, video=None))
    rows = np.load(tmp_path / "kept" / "features_res5.npy")
    assert kept["num_rows"] == 3 and np.isnan(rows[1]).all() and close(rows[[0, 2]], reference_rows[:2])
    assert [r["row"] for r in read_index(tmp_path / "kept")] == ["0", "1", "2"]


def test_resume_refuses_shards_of_other_settings(trained, tmp_path):
    _, cfg, ckpt = trained
    entries = resolve_source(cfg, list_file=None, split="test", video=None)[1]
    request = Request(layers=("res5",), clips=2, crops=1, per_clip=False, shard_size=2)
    assert prepare_shards(str(tmp_path), fingerprint(cfg, ckpt, request, entries)) == ""
    assert prepare_shards(str(tmp_path), fingerprint(cfg, ckpt, request, entries)) == ""
    other = Request(layers=("res5", "logits"), clips=2, crops=1, per_clip=False, shard_size=2)
    problem = prepare_shards(str(tmp_path), fingerprint(cfg, ckpt, other, entries[:-1]))
    assert "other settings (differs in: list_sha1, request, videos)" in problem


@pytest.mark.slow
def test_two_gloo_ranks_give_the_one_rank_array(trained, reference, tmp_path):
    args, _, ckpt = trained
    result = torchrun(2, "extract-features", *args, "--checkpoint", ckpt, "--split", "test", "--out",
                      str(tmp_path), "--shard-size", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "with 2 rank(s)" in result.stdout
    assert close(np.load(tmp_path / "features_res5.npy"), np.load(reference / "features_res5.npy"))
    assert read_index(tmp_path) == read_index(reference)


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_same_array(trained, reference, tmp_path):
    args, _, ckpt = trained
    cmd = ["extract-features", *args, "--checkpoint", ckpt, "--split", "test", "--out", str(tmp_path),
           "--shard-size", "1"]
    second = tmp_path / "shards" / "shard_000001.npz"
    kill_when_written(second, *cmd)
    assert second.exists(), "the run never wrote its second shard"
    assert not (tmp_path / "meta.json").exists(), "the kill landed after the merge: nothing left to resume"
    done = len(list((tmp_path / "shards").glob("shard_*.npz")))
    resumed = video_nl(*cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming: {done} of {NUM_VIDEOS} shards already done" in resumed.stdout
    assert close(np.load(tmp_path / "features_res5.npy"), np.load(reference / "features_res5.npy"))
    assert read_index(tmp_path) == read_index(reference)


def test_probs_follow_the_head_activation(trained):
    """``probs`` of a multi-label model (``MODEL.HEAD_ACT sigmoid``) are per-class sigmoids, not a softmax."""
    _, cfg, _ = trained
    model = trained_like_(build_model(cfg)).eval()
    views = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    taps = {act: LayerTaps(model, ("logits", "probs"), act=act) for act in ("softmax", "sigmoid")}
    out = {act: t(views, chunk=2, device=torch.device("cpu"), precision=contextlib.nullcontext())
           for act, t in taps.items()}
    assert torch.equal(out["sigmoid"]["probs"], torch.sigmoid(out["sigmoid"]["logits"]))
    assert torch.equal(out["softmax"]["probs"], torch.softmax(out["softmax"]["logits"], dim=1))


@pytest.mark.slow
def test_compiled_extraction_equals_eager(trained, reference, tmp_path):
    """``TRAIN.COMPILE`` applies to extraction as to testing; hooked blocks still see the compiled forward."""
    _, cfg, ckpt = trained
    compiled = copy.deepcopy(cfg)
    compiled.TRAIN.COMPILE = "default"
    extract(cfg, ckpt, tmp_path / "eager", layers=("res5", "s3.nl1"))
    extract(compiled, ckpt, tmp_path / "compiled", layers=("res5", "s3.nl1"))
    for layer in ("res5", "s3.nl1"):
        eager = np.load(tmp_path / "eager" / f"features_{layer}.npy")
        assert close(np.load(tmp_path / "compiled" / f"features_{layer}.npy"), eager, tol=1e-4), layer
