"""`video-nl export`: BN folding, the three artifact formats for every block type, what their graphs
materialise, their metadata, and `video-nl predict --model` on real mp4 files.

Models are tiny (ResNet-18 at width 4, 4 frames at 64 px, one context block in res3) and made to look
trained (:func:`helpers.models.trained_like_`), so folding and export see non-zero context blocks and BN
statistics. An export takes seconds, so every block type goes through every format in one "zoo" model (all
block kinds in a row) and whole models are exported for a few representative configs.
"""
from __future__ import annotations

import json

import pytest
import torch
from helpers.engine_runs import make_dataset, tiny_args, video_nl
from helpers.models import VARIANTS, tiny_cfg, trained_like_
from torch import nn

from video_nl.config import load_config
from video_nl.deploy import exporters
from video_nl.deploy.artifact import (EXTENSIONS, FORMATS, SAVERS, apply_input_settings, build_meta, detect_format,
                                      load_artifact, read_meta, relative_difference)
from video_nl.deploy.fold_bn import fold_batchnorm, remaining_batchnorms
from video_nl.deploy.graph import check_graph, score_map_sizes
from video_nl.engine.export import export_model
from video_nl.engine.predict import predict
from video_nl.errors import UserError
from video_nl.models.build import build_model
from video_nl.models.context import GCBlock, LatentGNNBlock, NonLocalBlock, SEBlock, SimplifiedNonLocalBlock

TOL = 1e-5  # of the outputs' scale: fp32 round-off of folding/exporting is ~1e-6
#: whole models through `export_model` (every block type in every format is covered by the block zoo below)
MODEL_CASES = [("nl_softmax", f) for f in FORMATS] + [("c2d", "exported"), ("i3d", "torchscript")]


def clip(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, 4, 64, 64, generator=torch.Generator().manual_seed(seed))


def checkpoint(tmp_path, variant: str, *extra: str) -> str:
    """A trained-looking checkpoint of ``variant`` on disk."""
    model = trained_like_(build_model(tiny_cfg(variant, *extra)))
    path = tmp_path / f"{variant}.pyth"
    torch.save({"model_state": model.state_dict()}, path)
    return str(path)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fold_batchnorm_removes_every_bn_and_preserves_outputs(variant):
    model = trained_like_(build_model(tiny_cfg(variant)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert remaining_batchnorms(folded) == []
    assert remaining_batchnorms(model), "the original model must keep its BNs"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = clip(3, 1)
    with torch.no_grad():
        ref = model(x)
        assert relative_difference(folded(x), ref) < TOL
        fresh = build_model(tiny_cfg(variant)).eval()  # zero-initialised gammas fold to zero weights, bias β
        assert relative_difference(fold_batchnorm(fresh)(x), fresh(x)) < TOL


@pytest.mark.parametrize("variant,fmt", MODEL_CASES)
def test_model_exports_reload_equal_to_eager_with_attention_kept_fused(tmp_path, variant, fmt):
    cfg = tiny_cfg(variant)
    path = checkpoint(tmp_path, variant)
    out = str(tmp_path / f"model{EXTENSIONS[fmt]}")
    report = export_model(cfg, fmt=fmt, out=out, checkpoint=path, clip=(4, 64, 64), batch=None)
    assert report["rel_diff"] < 1e-4 and report["format"] == fmt and detect_format(out) == fmt
    graph = report["graph"]  # SDPA stays one node (ONNX: Attention, opset 23); no score map eager does not form
    assert graph["materialised_score_maps"] == [] and graph["ok"]
    assert graph["attention_ops"] == (1 if variant == "nl_softmax" else 0)
    # an independent check on another batch size (the batch dimension is dynamic)
    model = build_model(cfg).eval()
    model.load_state_dict(torch.load(path, weights_only=True)["model_state"])
    artifact = load_artifact(out)
    x = clip(5, 2)
    with torch.no_grad():
        assert relative_difference(artifact(x), model(x)) < TOL * 10


def block_zoo() -> nn.Sequential:
    """Every context block kind in a row on an 8-channel map (trained-looking): the four non-local
    instantiations, GC, SNL, SE and LatentGNN (asymmetric and symmetric)."""
    dim = 8
    blocks = [NonLocalBlock(dim=dim, instantiation=i) for i in ("softmax", "gaussian", "dot_product", "concatenation")]
    blocks += [GCBlock(dim=dim, fusion=("channel_add", "channel_mul")), SimplifiedNonLocalBlock(dim=dim),
               SEBlock(dim=dim, ratio=0.25), LatentGNNBlock(dim=dim, num_nodes=4, channel_stride=2),
               LatentGNNBlock(dim=dim, num_nodes=4, channel_stride=2, symmetric=True)]
    return trained_like_(nn.Sequential(nn.Conv3d(3, dim, 1), *blocks))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_block_type_exports_reloads_equal_and_materialises_nothing_eager_does_not(tmp_path, fmt):
    zoo = block_zoo()
    folded = fold_batchnorm(zoo)
    assert remaining_batchnorms(folded) == []
    x = torch.randn(2, 3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    graph = exporters.export(fmt, folded, x, dynamic_batch=True)
    report = check_graph(fmt, graph, folded, x)
    assert report.attention_ops == 2 and report.expected_attention_ops == 2  # softmax, gaussian
    assert report.materialised == []
    meta = build_meta(tiny_cfg("c2d"), fmt=fmt, model_info={"zoo": True}, class_names=list("abcdefgh"),
                      clip=(2, 8, 8), batch=None, fold_bn=True, checkpoint=None)
    out = str(tmp_path / f"zoo{EXTENSIONS[fmt]}")
    SAVERS[fmt](graph, out, meta)
    assert read_meta(out) == meta
    artifact = load_artifact(out)
    y = torch.randn(3, 3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = zoo(y)
    assert relative_difference(artifact(y).flatten(1), reference.flatten(1)) < TOL * 10


def _exported_graph(variant: str, fmt: str, **kwargs):
    model = fold_batchnorm(trained_like_(build_model(tiny_cfg(variant))))
    x = clip(2, 0)
    return model, x, exporters.export(fmt, model, x, dynamic_batch=True, **kwargs)


def test_older_onnx_opsets_are_caught_materialising_the_score_map():
    """Opset 23 keeps SDPA one ``Attention`` node (checked for every format above); opsets below 23 have no
    attention op, and the check must see the T·H·W × T'·H'·W' map the exporter then writes."""
    model, x, graph = _exported_graph("nl_softmax", "onnx", opset=18)
    (lq, lk), = score_map_sizes(model, x).values()
    assert (lq, lk) == (2 * 8 * 8, 2 * 4 * 4)  # res3 of a 4×64² clip: T·H·W queries, 1×2×2-pooled keys
    assert "Attention" not in [n.op_type for n in graph.graph.node]
    report = check_graph("onnx", graph, model, x)
    assert report.attention_ops == 0 and not report.ok
    assert [tuple(s[-2:]) for s in report.materialised] == [(lq, lk)]


def test_concatenation_materialises_its_map_in_eager_too_so_exporting_adds_nothing():
    model, x, graph = _exported_graph("nl_concatenation", "exported")
    report = check_graph("exported", graph, model, x)
    assert report.ok and report.attention_ops == 0 and report.expected_attention_ops == 0


def test_fixed_batch_fully_convolutional_artifact_runs_any_number_of_views_and_carries_its_metadata(tmp_path):
    """A 96² clip is larger than the 64² training window: the head's fully-convolutional path is exported."""
    cfg = tiny_cfg("nl_softmax", "TEST.NUM_ENSEMBLE_VIEWS", "3", "DATA.SAMPLING_RATE", "3")
    path = checkpoint(tmp_path, "nl_softmax")
    out = str(tmp_path / "fixed.onnx")
    report = export_model(cfg, fmt="onnx", out=out, checkpoint=path, clip=(4, 96, 96), batch=2)
    assert report["batch"] == 2 and report["clip"] == [4, 96, 96] and report["graph"]["ok"]
    meta = read_meta(out)
    assert meta["class_names"] == [str(i) for i in range(5)] and meta["input"]["batch"] == 2
    assert meta["input"]["clip"] == [4, 96, 96] and meta["fold_bn"] is True and meta["checkpoint"] == path
    assert meta["model"]["context_blocks"] == ["s3.nl1"] and meta["model"]["arch"] == "i3d"
    views = apply_input_settings(load_config(None, []), meta)
    assert (views.DATA.NUM_FRAMES, views.DATA.TEST_CROP_SIZE, views.DATA.SAMPLING_RATE) == (4, 96, 3)
    assert views.TEST.NUM_ENSEMBLE_VIEWS == 3 and views.DATA.MEAN == cfg.DATA.MEAN
    model = build_model(cfg).eval()
    model.load_state_dict(torch.load(path, weights_only=True)["model_state"])
    x = torch.randn(5, 3, 4, 96, 96)
    with torch.no_grad():
        assert model.head.pool_size == (2, 2, 2) and model.forward_res5(x).shape[2:] == (2, 3, 3)
        assert relative_difference(load_artifact(out)(x), model(x)) < TOL * 10
    with pytest.raises(UserError, match="takes B×3×4×96×96"):
        load_artifact(out)(clip(1, 0))


@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated")
def test_a_file_that_is_no_artifact_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07" + b"not a model" * 50)
    with pytest.raises(UserError, match="not a model file|without video_nl metadata"):
        read_meta(str(junk))
    model, x, graph = _exported_graph("c2d", "torchscript")
    plain = tmp_path / "plain.ts"
    torch.jit.save(graph, str(plain))
    with pytest.raises(UserError, match="without video_nl metadata"):
        load_artifact(str(plain))
    with pytest.raises(UserError, match="does not exist"):
        detect_format(str(tmp_path / "missing.pt2"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("videos"), train=0, val=0, test=2)


@pytest.mark.slow
def test_cli_export_then_predict_with_the_artifact_matches_predict_with_the_checkpoint(data, tmp_path):
    args = tiny_args(data, tmp_path / "run")
    cfg = load_config(args[1], args[2:])
    state = trained_like_(build_model(cfg)).state_dict()
    ckpt = tmp_path / "trained.pyth"
    torch.save({"model_state": state}, ckpt)
    out = tmp_path / "model"
    result = video_nl("export", *args, "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(out),
                      "--dynamic-batch", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["out"] == f"{out}.ts" and report["rel_diff"] < 1e-4 and report["graph"]["attention_ops"] == 1
    video = (data / "test.csv").read_text().split()[0]
    by_model = video_nl("predict", "--model", f"{out}.ts", "--video", video, "--json")
    assert by_model.returncode == 0, by_model.stderr[-3000:]
    top_model = json.loads(by_model.stdout)["predictions"]
    top_ckpt = predict(cfg, checkpoint=str(ckpt), video=video, topk=5)
    assert [p["name"] for p in top_model] == [p["name"] for p in top_ckpt]
    assert all(abs(a["score"] - b["score"]) < 1e-4 for a, b in zip(top_model, top_ckpt))
    assert {p["name"] for p in top_model} == {"class_0", "class_1"}
    both = video_nl("predict", "--model", f"{out}.ts", "--checkpoint", str(ckpt), "--video", video)
    assert both.returncode == 2 and "not both" in both.stderr
