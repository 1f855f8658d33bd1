"""``video-nl info``: parameter counts of the named configs, FLOP counting (incl. SDPA), CLI output."""
from __future__ import annotations

import json
import pathlib

import pytest
import torch
import torch.nn.functional as F

from video_nl.cli import main as cli_main
from video_nl.config import get_default_config, load_config, merge_overrides
from video_nl.models import build_model
from video_nl.models.info import count_gflops, model_info

torch.set_num_threads(2)
KINETICS = pathlib.Path(__file__).resolve().parents[1] / "configs" / "Kinetics"


@pytest.mark.parametrize("name, millions", [
    ("C2D_8x8_R50", 24.33), ("I3D_8x8_R50", 28.04), ("C2D_NLN_8x8_R50", 31.69), ("I3D_NLN_8x8_R50", 35.40),
])
def test_params_of_named_configs(name, millions):
    info = model_info(load_config(str(KINETICS / f"{name}.yaml")), flops=False)
    assert isinstance(info["params"], int) and abs(info["params"] / 1e6 - millions) <= 0.02
    assert len(info["context_blocks"]) == (5 if "NLN" in name else 0)


def test_sdpa_is_counted_as_multiply_adds():
    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 5)
    assert count_gflops(Attention(), (q, k, v)) * 1e9 == 2 * 3 * 10 * 6 * (8 + 5)


@pytest.mark.parametrize("fast_path", [True, False])
def test_nonlocal_flops_match_hand_count(fast_path):
    cfg = get_default_config()
    merge_overrides(cfg, ["RESNET.WIDTH_PER_GROUP", "8", "DATA.TRAIN_CROP_SIZE", "64", "NONLOCAL.LOCATION",
                          "[[], [1], [], []]", "NONLOCAL.FAST_PATH", str(fast_path)])
    block = build_model(cfg).s3.nl1
    # res3 of an 8×64² clip: C = 64, inner 32, queries 4×8×8 = 256, keys 4×4×4 = 64 (1×2×2 key pool).
    c, d, n, m = 64, 32, 256, 64
    convs = n * c * d + 2 * m * c * d + n * d * c  # theta, phi + g (on pooled keys), out
    attention = 2 * n * m * d  # logits and weighted sum
    bn = 2 * n * c  # fvcore: eval BN with affine = 2 per element
    flops = count_gflops(block, torch.zeros(1, c, 4, 8, 8)) * 1e9
    assert flops == pytest.approx(convs + attention + bn, rel=1e-6)


def test_cli_json_and_table(capsys):
    cfg = str(KINETICS / "I3D_NLN_8x8_R50.yaml")
    small = ["RESNET.WIDTH_PER_GROUP", "4", "DATA.TRAIN_CROP_SIZE", "64", "MODEL.NUM_CLASSES", "10"]
    with pytest.raises(SystemExit) as exit_:
        cli_main(["info", "--cfg", cfg, *small, "--json"])
    assert exit_.value.code == 0
    info = json.loads(capsys.readouterr().out)
    model = build_model(load_config(cfg, small))
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert isinstance(info["gflops"], float) and info["gflops"] > 0 and info["input"] == [1, 3, 8, 64, 64]
    assert info["context_blocks"][2] == {"name": "s4.nl1", "type": "nonlocal", "stage": 4, "block": 1,
                                         "channels": 64}
    assert [b["name"] for b in info["context_blocks"]] == ["s3.nl1", "s3.nl3", "s4.nl1", "s4.nl3", "s4.nl5"]
    with pytest.raises(SystemExit):
        cli_main(["info", "--cfg", cfg, *small])
    table = capsys.readouterr().out
    assert "params" in table and "GFLOPs" in table and "s4.nl5" in table
