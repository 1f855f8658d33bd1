"""Multi-label (Charades-style) lists, mAP, the sigmoid head, losses with class weights, fine-tuning
initialisation, the multi-label synthetic set, and a multi-label `video-nl train` run end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.engine_runs import read_log, tiny_overrides, video_nl

from video_nl.config import ConfigError, load_config
from video_nl.data.decoding import decode_frames
from video_nl.data.lists import class_counts, list_line, read_video_list
from video_nl.data.synthetic_multilabel import EVENTS, make_synthetic_multilabel, render, render_event
from video_nl.engine.losses import build_criterion, class_weights
from video_nl.engine.metrics import average_precision, mean_average_precision
from video_nl.engine.multilabel import gathered_map, multi_hot, summarise, write_outputs
from video_nl.errors import UserError
from video_nl.models.head import ResNetHead

ML = ["DATA.MULTI_LABEL", "True", "MODEL.LOSS_FUNC", "bce_logit", "MODEL.HEAD_ACT", "sigmoid"]


# ---------------------------------------------------------------------------------------------- lists
def test_multi_label_list_forms_and_single_label_parsing_unchanged(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("a b.mp4 3,1\n"        # PySlowFast Charades form, a path with a space
                    "c.mp4 2 0 2\n"         # MMAction2 form (repeats collapse)
                    "d.mp4\n"               # no label: all-negative
                    "12345 4\n"             # the first field is always the path, even if numeric
                    "e f.mp4 abseiling,1\n"  # class names work too
                    "g.mp4 1,9\n"           # out of range: dropped, not read as part of the path
                    "h.mp4 1 x\n")          # a trailing non-label field ends the labels: path "h.mp4 1 x"
    entries, problems = read_video_list(str(path), num_classes=5, multi_label=True, classnames=["abseiling"])
    assert [(e.path, e.label, e.labels) for e in entries] == [
        ("a b.mp4", -1, (1, 3)), ("c.mp4", -1, (0, 2)), ("d.mp4", -1, ()), ("12345", -1, (4,)),
        ("e f.mp4", -1, (0, 1)), ("h.mp4 1 x", -1, ())]
    assert [(p.line_no, "outside [0, 5)" in p.reason) for p in problems] == [(6, True)]
    assert class_counts(entries, 5) == [2, 2, 1, 1, 1]
    # another separator: the labels follow its last occurrence; a label-less line is the path alone
    other = tmp_path / "val.csv"
    other.write_text("x y.mp4;0, 2\nz.mp4\n")
    got = read_video_list(str(other), separator=";", multi_label=True, num_classes=3)[0]
    assert [(e.path, e.labels) for e in got] == [("x y.mp4", (0, 2)), ("z.mp4", ())]
    # the same file read as single-label: the last field is the label, exactly as before
    single, dropped = read_video_list(str(path), num_classes=5)
    assert [(e.path, e.label) for e in single] == [("c.mp4 2 0", 2), ("12345", 4)]
    assert len(dropped) == 5
    # list_line writes what the parser reads
    lines = tmp_path / "written.csv"
    lines.write_text(list_line("/v/a.mp4", (0, 3)) + list_line("/v/b.mp4", ()) + list_line("/v/c.mp4", 2))
    assert lines.read_text() == "/v/a.mp4 0,3\n/v/b.mp4\n/v/c.mp4 2\n"
    frames = tmp_path / "frames.csv"
    frames.write_text("original_vido_id video_id frame_id path labels\nX 0 0 X/X-000001.jpg \"\"\n")
    with pytest.raises(UserError, match="frame list"):
        read_video_list(str(frames), multi_label=True)


# ---------------------------------------------------------------------------------------------- mAP
def test_average_precision_matches_the_hand_computed_definition():
    scores = torch.tensor([[0.9, 0.5, 0.3, 0.1], [0.8, 0.5, 0.2, 0.4], [0.7, 0.2, 0.1, 0.2],
                           [0.6, 0.2, 0.9, 0.3], [0.5, 0.1, 0.4, 0.9]])
    targets = torch.tensor([[1, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 1], [0, 1, 0, 1], [1, 0, 0, 1]])
    ap = average_precision(scores, targets)
    # class 0: hits at ranks 1, 3, 5 -> (1/1 + 2/3 + 3/5) / 3
    assert ap[0] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # class 1: tied scores enter together: {0.5, 0.5} -> P 1/2 at R 1/2, {0.2, 0.2} -> P 2/4 at R 1 => 0.5
    # (ranking ties arbitrarily would give 0.75 or 1.0)
    assert ap[1] == pytest.approx(0.5)
    assert ap[2] is None and ap[3] == pytest.approx(1.0)  # no positive: left out; all positive: 1
    assert mean_average_precision(ap) == pytest.approx(100 * ((1 + 2 / 3 + 3 / 5) / 3 + 0.5 + 1.0) / 3)
    # sklearn's documented example: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.8333
    doc = average_precision(torch.tensor([[0.1], [0.4], [0.35], [0.8]]), torch.tensor([[0], [0], [1], [1]]))
    assert doc[0] == pytest.approx(0.8333, abs=1e-4)
    assert mean_average_precision([None, None]) == 0.0


def test_test_summary_and_outputs_of_a_multi_label_run(tmp_path):
    cfg = load_config(None, ML + ["MODEL.NUM_CLASSES", "3", "OUTPUT_DIR", str(tmp_path), "TEST.VIEWS_SWEEP", "True",
                                  "TEST.NUM_ENSEMBLE_VIEWS", "3", "TEST.NUM_SPATIAL_CROPS", "1"])
    records = [
        {"index": 0, "path": "a", "label": [0, 2], "ok": True, "failure": "", "scores": torch.tensor([.9, .1, .8]),
         "first": torch.tensor([.6, .3, .1]), "sweep": {1: torch.tensor([.6, .3, .1]), 3: torch.tensor([.9, .1, .8])}},
        {"index": 1, "path": "b", "label": [], "ok": True, "failure": "", "scores": torch.tensor([.2, .7, .3]),
         "first": torch.tensor([.2, .7, .3]), "sweep": {1: torch.tensor([.2, .7, .3]), 3: torch.tensor([.2, .7, .3])}},
        {"index": 2, "path": "c", "label": [2], "ok": False, "failure": "truncated", "scores": None, "first": None,
         "sweep": {}},
    ]
    summary = summarise(cfg, records, checkpoint="ck.pyth")
    # the failed video scores 0: class 2's positives rank 1st and 3rd -> (1 + 2/3) / 2; class 0: 1; class 1: none
    assert summary["mAP"] == pytest.approx(100 * (1 + (1 + 2 / 3) / 2) / 2)
    assert summary["first_view_mAP"] == pytest.approx(100 * (1 + (1 / 2 + 2 / 3) / 2) / 2)
    assert summary["views_sweep"]["1"]["mAP"] == pytest.approx(summary["first_view_mAP"])
    assert summary["views_sweep"]["3"]["mAP"] == pytest.approx(summary["mAP"])
    assert (summary["num_videos"], summary["num_failed"], summary["num_classes_with_positives"]) == (3, 1, 2)
    assert "top1" not in summary
    out = write_outputs(cfg, records, summary, ["x", "y", "z"])
    rows = (tmp_path / "test" / "per_class.csv").read_text().splitlines()
    assert rows == ["class,name,num_positives,AP", "0,x,1,100.00", "1,y,0,", "2,z,2,83.33"]
    preds = json.loads((tmp_path / "test" / "predictions.json").read_text())
    assert preds[0]["labels"] == [0, 2] and preds[0]["label_names"] == ["x", "z"]
    assert [p["name"] for p in preds[0]["top5"]] == ["x", "z", "y"] and preds[2]["top5"] == []
    assert json.loads((tmp_path / "test" / "summary.json").read_text())["mAP"] == pytest.approx(summary["mAP"])
    assert (tmp_path / "test" / "per_class_ap.png").stat().st_size > 0 and out.endswith("test")
    assert torch.equal(multi_hot([[0, 2], []], 3), torch.tensor([[1., 0., 1.], [0., 0., 0.]]))


# ---------------------------------------------------------------------------------------------- model, loss
def test_sigmoid_head_returns_the_logit_of_the_mean_position_probability():
    torch.manual_seed(0)
    head = ResNetHead(dim_in=4, num_classes=3, pool_size=(1, 2, 2), dropout=0.0, act="sigmoid").eval()
    x = torch.randn(2, 4, 2, 3, 3) * 3
    pooled = F.avg_pool3d(x, (1, 2, 2), stride=1)                                   # 2×4×2×2×2: 8 positions
    logits = torch.einsum("bcthw,kc->bkthw", pooled, head.fc.weight) + head.fc.bias[:, None, None, None]
    expected = torch.sigmoid(logits).flatten(2).mean(dim=2)
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(head(x)), expected, rtol=1e-5, atol=1e-6)
        train_window = head(x[:, :, :1, :2, :2])  # no larger than the window: plain logits
        torch.testing.assert_close(train_window, head.fc(x[:, :, :1, :2, :2].mean(dim=(2, 3, 4))))


def test_losses_with_class_weights():
    cfg = load_config(None, ["MODEL.NUM_CLASSES", "3", "MODEL.CLASS_WEIGHTS", "[1.0, 2.0, 0.5]"])
    logits, labels = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]]), torch.tensor([1, 2])
    ce = build_criterion(cfg, [1, 1, 1])
    expected = (2.0 * F.cross_entropy(logits[:1], labels[:1]) + 0.5 * F.cross_entropy(logits[1:], labels[1:])) / 2
    assert float(ce(logits, labels)) == pytest.approx(float(expected))
    bce_cfg = load_config(None, ML + ["MODEL.NUM_CLASSES", "3", "MODEL.CLASS_WEIGHTS", "[1.0, 2.0, 0.5]"])
    bce = build_criterion(bce_cfg, [1, 1, 1])
    targets = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    reference = torch.nn.BCEWithLogitsLoss(weight=torch.tensor([1.0, 2.0, 0.5]))(logits, targets)
    assert float(bce(logits, targets)) == pytest.approx(float(reference))
    # integer labels become one-hot targets (bce_logit on a single-label list)
    one_hot = load_config(None, ["MODEL.NUM_CLASSES", "3", "MODEL.LOSS_FUNC", "bce_logit"])
    assert float(build_criterion(one_hot, [1, 1, 1])(logits, labels)) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits, F.one_hot(labels, 3).float())))
    # balanced: mean count / count; a class without train videos gets 1
    balanced = load_config(None, ["MODEL.NUM_CLASSES", "3", "MODEL.CLASS_WEIGHTS", "balanced"])
    assert class_weights(balanced, [3, 1, 0]).tolist() == pytest.approx([2 / 3, 2.0, 1.0])
    assert class_weights(load_config(None, []), [3, 1, 0]) is None


def test_config_checks_multi_label_consistency_and_class_weights():
    load_config(None, ML)  # consistent
    for overrides, message in ((["DATA.MULTI_LABEL", "True"], "MODEL.LOSS_FUNC bce_logit"),
                               (["DATA.MULTI_LABEL", "True", "MODEL.LOSS_FUNC", "bce_logit"], "HEAD_ACT sigmoid"),
                               (ML + ["DATA.PATH_LABEL_SEPARATOR", ","], "ambiguous"),
                               (["MODEL.LOSS_FUNC", "bce_logit", "TRAIN.LABEL_SMOOTHING", "0.1"], "cross_entropy only"),
                               (["MODEL.CLASS_WEIGHTS", "balance"], "balanced"),
                               (["MODEL.NUM_CLASSES", "3", "MODEL.CLASS_WEIGHTS", "[1.0, 2.0]"], "one weight per class"),
                               (["MODEL.CLASS_WEIGHTS", "[-1.0]"], "floats >= 0")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, overrides)


# ---------------------------------------------------------------------------------------------- synthetic
def test_synthetic_multilabel_events_and_lists(tmp_path):
    for event in (2, 4):
        a, b = render_event(event, 7, frames=8, quadrant=16), render_event(event + 1, 7, frames=8, quadrant=16)
        assert np.array_equal(b, a[::-1]) and not np.array_equal(a, b)
    for event in (0, 1):  # static: the same in every frame
        s = render_event(event, 7, frames=8, quadrant=16)
        assert s[..., 3].any() and all(np.array_equal(s[0], f) for f in s)
    # reversing a whole video swaps its temporal labels and keeps the static ones
    assert np.array_equal(render([2, 1, None, 5], 3, frames=8)[::-1], render([3, 1, None, 4], 3, frames=8))
    lists = make_synthetic_multilabel(str(tmp_path), train_videos=6, val_videos=3, frames=8, workers=1, seed=2)
    entries, problems = read_video_list(str(tmp_path / "train.csv"), num_classes=6, multi_label=True)
    assert not problems and [(e.path, e.labels) for e in entries] == lists["train"]
    assert any(len(labels) > 1 for _, labels in lists["train"] + lists["val"])  # events co-occur
    assert json.loads((tmp_path / "classnames.json").read_text()) == {n: i for i, n in enumerate(EVENTS)}
    assert decode_frames(entries[0].path, range(8), timeout_s=0).shape == (8, 32, 32, 3)
    assert (tmp_path / "test.csv").read_text() == (tmp_path / "val.csv").read_text()


# ---------------------------------------------------------------------------------------------- train + test
@pytest.fixture(scope="module")
def multilabel_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml")
    make_synthetic_multilabel(str(root), train_videos=8, val_videos=4, frames=8, workers=1, seed=1)
    (root / "tiny.yaml").write_text("MODEL:\n  NUM_CLASSES: 6\n")
    return root


def test_multi_label_train_logs_map_and_tests_with_max_over_views(multilabel_data, tmp_path):
    out = tmp_path / "run"
    extra = {"MODEL.NUM_CLASSES": 6, "DATA.MULTI_LABEL": True, "MODEL.LOSS_FUNC": "bce_logit",
             "MODEL.HEAD_ACT": "sigmoid", "TEST.ENSEMBLE_METHOD": "max", "MODEL.CLASS_WEIGHTS": "balanced",
             "TEST.NUM_SPATIAL_CROPS": 3, "TENSORBOARD.ENABLE": False}
    result = video_nl("train", "--cfg", str(multilabel_data / "tiny.yaml"),
                      *tiny_overrides(multilabel_data, out, **extra))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bce_logit with per-class weights (MODEL.CLASS_WEIGHTS)" in result.stdout
    records = read_log(out)
    epochs = [r for r in records if r["_type"] == "train_epoch"]
    vals = [r for r in records if r["_type"] == "val_epoch"]
    iters = [r for r in records if r["_type"] == "train_iter"]
    assert len(epochs) == 2 and all(0 <= r["mAP"] <= 100 and "top1_err" not in r for r in epochs + vals)
    assert vals and iters and all("top1_err" not in r and math.isfinite(r["loss"]) for r in iters)
    summary = json.loads((out / "test" / "summary.json").read_text())
    assert summary["ensemble_method"] == "max" and summary["views"] == 6 and 0 <= summary["mAP"] <= 100
    assert (out / "test" / "per_class.csv").read_text().startswith("class,name,num_positives,AP")
    assert "test: mAP" in result.stdout
    video = next(iter(json.loads((out / "test" / "predictions.json").read_text())))
    assert isinstance(video["labels"], list) and all(0 < p["score"] < 1 for p in video["top5"])


@pytest.mark.slow
def test_i3d_nl_learns_the_multi_label_synthetic_set(tmp_path):
    """Demo-size check: I3D-NL (configs/Synthetic/I3D_NLN_tiny_multilabel.yaml, 12 epochs) reaches a test mAP
    far above the label prior (the mAP of random scores ≈ the mean positive rate, ~30% here)."""
    data = tmp_path / "data"
    lists = make_synthetic_multilabel(str(data), train_videos=240, val_videos=60, workers=2)
    prior = np.mean([[c in labels for c in range(6)] for _, labels in lists["val"]]) * 100
    out = tmp_path / "run"
    result = video_nl("train", "--cfg", "configs/Synthetic/I3D_NLN_tiny_multilabel.yaml", "DATA.PATH_TO_DATA_DIR",
                      str(data), "OUTPUT_DIR", str(out), "TENSORBOARD.ENABLE", "False", "TEST.NUM_ENSEMBLE_VIEWS", "2",
                      "TEST.NUM_SPATIAL_CROPS", "1", timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "test" / "summary.json").read_text())
    assert summary["mAP"] > prior + 35, (summary["mAP"], prior)


def _gather_on_rank(rank: int, init: str, result_file: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        scores, targets = _split_case()
        mine = slice(0, 3) if rank == 0 else slice(3, 7)  # uneven shares, as a sampler without padding gives
        value = gathered_map([scores[mine][:2], scores[mine][2:]], [targets[mine][:2], targets[mine][2:]],
                             num_classes=3)
        if rank == 0:
            with open(result_file, "w") as f:
                f.write(repr(value))
    finally:
        torch.distributed.destroy_process_group()


def _split_case() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(7, 3, generator=g), (torch.rand(7, 3, generator=g) > 0.5).float()


def test_map_is_gathered_over_ranks(tmp_path):
    """Train/val mAP: each rank's predictions are gathered (real gloo group, 2 processes) before the AP."""
    result = tmp_path / "map.txt"
    torch.multiprocessing.spawn(_gather_on_rank, args=(f"file://{tmp_path / 'init'}", str(result)), nprocs=2)
    scores, targets = _split_case()
    assert float(result.read_text()) == pytest.approx(mean_average_precision(average_precision(scores, targets)))
