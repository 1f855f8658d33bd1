"""`video-nl visualize`: forced attention lands on the right frames and pixels; output files; block types."""
from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from helpers.videos import random_video, write_mp4
from video_nl.config import get_default_config
from video_nl.errors import UserError
from video_nl.models.build import build_model
from video_nl.viz.attention import (auto_queries, geometry_for, log_attention_to_tensorboard, query_attention,
                                   top_positions)
from video_nl.viz.capture import run_capturing, select_blocks

SIZE, FRAMES = 64, 8
SPOT_T, SPOT_Y, SPOT_X = 5, (28, 36), (12, 20)  # a white 8x8 square in frame 5, centred on pixel (32, 16)


def cfg_dict(arch: str = "c2d", pool=(1, 2, 2), context: str = "nonlocal") -> dict:
    return {"MODEL": {"ARCH": arch, "NUM_CLASSES": 5},
            "RESNET": {"DEPTH": 18, "WIDTH_PER_GROUP": 4},
            "CONTEXT": {"TYPE": context},
            "NONLOCAL": {"LOCATION": [[], [1], [1], []], "POOL": [list(pool)] * 4},
            "LATENTGNN": {"NUM_NODES": 6, "CHANNEL_STRIDE": 2},
            "DATA": {"NUM_FRAMES": FRAMES, "SAMPLING_RATE": 1, "TRAIN_CROP_SIZE": SIZE, "TEST_CROP_SIZE": SIZE},
            "TEST": {"NUM_ENSEMBLE_VIEWS": 1}, "DEVICE": "cpu"}


def make_cfg(**kwargs):
    cfg = get_default_config()
    for section, values in cfg_dict(**kwargs).items():
        if isinstance(values, dict):
            cfg[section].update(values)
        else:
            cfg[section] = values
    return cfg


def spot_frames() -> np.ndarray:
    frames = np.zeros((FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    frames[SPOT_T, SPOT_Y[0]:SPOT_Y[1], SPOT_X[0]:SPOT_X[1]] = 255
    return frames


def normalise(frames: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(frames).float().div(255).sub(0.45).div(0.225)).permute(3, 0, 1, 2)


def force_attention_to_brightness(model: nn.Module) -> nn.Module:
    """Backbone features ∝ local brightness, and every non-local query attends to the brightest key.

    Stem: positive spatial weights, centre temporal tap dominant; shortcuts average channels; residual branches
    stay zero (final BN γ = 0). Non-local: θ ≡ 1 (bias only) and φ = large · mean channel, so logits ∝ brightness.
    """
    with torch.no_grad():
        w = model.stem.conv.weight
        w.fill_(0.02)
        w[:, :, w.shape[2] // 2] = 0.2
        for block in model.blocks():
            if block.shortcut is not None:
                block.shortcut.conv.weight.fill_(1.0 / block.shortcut.conv.in_channels)
        for info in model.context_blocks():
            nl = info.module
            nl.conv_theta.weight.zero_()
            nl.conv_theta.bias.fill_(1.0)
            nl.conv_phi.weight.fill_(50.0 / nl.dim)
            nl.conv_phi.bias.zero_()
    return model.eval()


@pytest.mark.parametrize("arch", ["c2d", "i3d"])
@pytest.mark.parametrize("pool", [(1, 2, 2), (1, 1, 1)])
def test_forced_attention_peaks_on_the_bright_spot(arch, pool):
    model = force_attention_to_brightness(build_model(make_cfg(arch=arch, pool=pool)))
    frames = spot_frames()
    blocks = select_blocks(model, None)
    _, inputs, _ = run_capturing(model, normalise(frames)[None], blocks)
    for block in blocks:
        x = inputs[block.name]
        geometry = geometry_for(model, block, x)
        queries = [(0, 60, 60), (3, 5, 40), (SPOT_T, 32, 16), (7, 50, 2)]
        for qa in query_attention(block.module, x, geometry, frames.shape[:3], queries, "user"):
            heat = qa.heat
            assert heat.sum(dim=(1, 2)).argmax() // 2 == SPOT_T // 2  # C2D/I3D pool2: frames 2k, 2k+1 share a cell
            assert heat[SPOT_T, 32, 16] == heat.max() > 0.9
            t, y, x_ = (heat == heat.max()).nonzero().unbind(1)
            assert set(t.tolist()) <= {4, 5}
            cell_h = geometry.axes[1].stride * geometry.key_pool[1]
            assert 32 - cell_h <= y.min() and y.max() < 32 + cell_h and 16 - cell_h <= x_.min() and x_.max() < 16 + cell_h
            top = top_positions(qa.keys, geometry, frames.shape[:3], 1)[0]
            assert top["t_range"][0] <= SPOT_T <= top["t_range"][1]
            assert top["y_range"][0] <= 32 <= top["y_range"][1] and top["x_range"][0] <= 16 <= top["x_range"][1]


def write_cfg(tmp_path, **kwargs) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg_dict(**kwargs)))
    return str(path)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "video_nl", *args], capture_output=True, text=True, timeout=300)


def test_cli_end_to_end_forced_checkpoint(tmp_path):
    """Real mp4 + checkpoint through the CLI: montage, GIF, MP4 and JSON agree with the bright spot."""
    cfg_path = write_cfg(tmp_path, arch="i3d")
    model = force_attention_to_brightness(build_model(make_cfg(arch="i3d")))
    ckpt = tmp_path / "forced.pyth"
    torch.save({"model_state": model.state_dict()}, ckpt)
    video = write_mp4(tmp_path / "spot.mp4", spot_frames(), fps=8)
    (tmp_path / "classnames.json").write_text(json.dumps({f"class{i}": i for i in range(5)}))
    out = tmp_path / "att"
    result = run_cli("visualize", "--cfg", cfg_path, "--checkpoint", str(ckpt), "--video", video, "--out", str(out),
                     "--block", "s4.nl1", "--query", "1,60,60", "--query", "7,4,50", "--topk", "3",
                     "DATA.CLASSNAMES_FILE", str(tmp_path / "classnames.json"))
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "attention.json").read_text())
    assert [b["name"] for b in report["blocks"]] == ["s4.nl1"]
    assert len(report["predictions"]) == 5 and report["predictions"][0]["name"].startswith("class")
    assert not report["initialised"]
    for j, q in enumerate(report["blocks"][0]["queries"]):
        top = q["top"][0]
        assert top["t_range"][0] <= SPOT_T <= top["t_range"][1] and top["weight"] > 0.9
        assert top["y_range"][0] <= 32 <= top["y_range"][1] and top["x_range"][0] <= 16 <= top["x_range"][1]
        assert len(q["top"]) == 3 and q["source"] == "user"
        png = Image.open(out / f"s4.nl1_q{j}.png")
        png.verify()
        gif = Image.open(out / q["animation"])
        assert gif.format == "GIF" and gif.n_frames == FRAMES
    result = run_cli("visualize", "--cfg", cfg_path, "--checkpoint", str(ckpt), "--video", video, "--out", str(out),
                     "--block", "s3.nl1", "--num-queries", "2", "--format", "mp4")
    assert result.returncode == 0, result.stderr
    with av.open(str(out / "s3.nl1_q1.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == FRAMES


@pytest.mark.parametrize("context", ["gc", "latentgnn", "se"])
def test_cli_other_block_types(tmp_path, context):
    video = tmp_path / "v.mp4"
    random_video(video, num_frames=FRAMES, size=SIZE)
    out = tmp_path / "att"
    result = run_cli("visualize", "--cfg", write_cfg(tmp_path, context=context), "--video", str(video),
                     "--out", str(out), "--num-queries", "1")
    assert result.returncode == 0, result.stderr
    assert "freshly initialised" in result.stdout
    report = json.loads((out / "attention.json").read_text())
    block = report["blocks"][0]
    prefix = {"gc": "gc", "latentgnn": "lgnn", "se": "se"}[context]
    assert block["name"] == f"s3.{prefix}1"
    if context == "gc":
        assert block["kind"] == "map" and Image.open(out / "s3.gc1_map.gif").n_frames == FRAMES
        weights = [p["weight"] for p in block["map"]["top"]]
        assert len(weights) == 10 and weights == sorted(weights, reverse=True) and 0 < sum(weights) <= 1 + 1e-6
        Image.open(out / "s3.gc1_map.png").verify()
    elif context == "latentgnn":
        assert block["kind"] == "query" and len(block["queries"]) == 1 and block["queries"][0]["source"] == "auto"
        assert len(block["latent"]["nodes"]) == 4
        Image.open(out / block["latent"]["png"]).verify()
    else:
        assert block["kind"] == "none" and "no spatial attention" in block["note"]
        assert "no spatial attention" in result.stdout


def test_unknown_block_and_bad_query_are_user_errors(tmp_path):
    video = tmp_path / "v.mp4"
    random_video(video, num_frames=FRAMES, size=SIZE)
    cfg_path = write_cfg(tmp_path)
    result = run_cli("visualize", "--cfg", cfg_path, "--video", str(video), "--block", "s4.nl9")
    assert result.returncode == 2 and "s3.nl1, s4.nl1" in result.stderr
    result = run_cli("visualize", "--cfg", cfg_path, "--video", str(video), "--query", "8,0,0")
    assert result.returncode == 2 and "outside the clip" in result.stderr
    with pytest.raises(UserError, match="s3.nl1"):
        select_blocks(build_model(make_cfg()), ["s5.nl0"])


def test_auto_queries_pick_strong_cells_spread_over_frames():
    model = build_model(make_cfg())
    block = model.context_blocks()[0]
    x = torch.zeros(1, block.channels, 4, 8, 8)
    x[0, :, 0, 2, 3] = 5.0
    x[0, :, 3, 6, 1] = 5.0
    geometry = geometry_for(model, block, x)
    assert auto_queries(x[0], geometry, (FRAMES, SIZE, SIZE), 2) == [(1, 16, 24), (7, 48, 8)]


def test_tensorboard_logging(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    model = build_model(make_cfg()).eval()
    writer = SummaryWriter(str(tmp_path))
    count = log_attention_to_tensorboard(model, normalise(spot_frames()), writer, 3, mean=[0.45] * 3,
                                         std=[0.225] * 3, num_queries=2)
    writer.close()
    assert count == 4
    assert any(p.name.startswith("events.") for p in tmp_path.iterdir())


def test_video_nl_test_logs_attention_montages(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = cfg_dict()
    cfg["DATA"].update(PATH_TO_DATA_DIR=str(tmp_path))
    cfg["TEST"].update(NUM_SPATIAL_CROPS=1, BATCH_SIZE=1)
    cfg.update(OUTPUT_DIR=str(tmp_path / "run"), DATA_LOADER={"NUM_WORKERS": 0}, LOG_MODEL_INFO=False)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    random_video(tmp_path / "v.mp4", num_frames=FRAMES, size=SIZE)
    (tmp_path / "test.csv").write_text(f"{tmp_path / 'v.mp4'} 1\n")
    torch.save({"model_state": build_model(make_cfg()).state_dict()}, tmp_path / "m.pyth")
    result = run_cli("test", "--cfg", str(tmp_path / "cfg.yaml"), "--checkpoint", str(tmp_path / "m.pyth"),
                     "TENSORBOARD.ATTENTION", "True")
    assert result.returncode == 0, result.stderr
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["attention/s3.nl1_q0", "attention/s3.nl1_q1", "attention/s4.nl1_q0",
                                               "attention/s4.nl1_q1"]
