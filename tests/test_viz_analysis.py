"""GCNet query-independence analysis (video_nl.viz.analysis): pair averages and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from helpers.videos import random_video
from video_nl.models.context import NonLocalBlock
from video_nl.viz.analysis import PairwiseCosine, block_distances, mean_pairwise_distance


def direct_distance(v: torch.Tensor, *, include_diagonal: bool = False) -> float:
    """O(n²) reference: (1 − cos)/2 over every ordered pair (i ≠ j, or all n²)."""
    u = torch.nn.functional.normalize(v.double(), dim=1)
    d = (1 - u @ u.t()) / 2
    n = v.shape[0]
    return float(d.sum() / (n * n if include_diagonal else n * (n - 1)))


def test_identical_rows_have_zero_distance():
    v = torch.tensor([[1.0, 2.0, 3.0]]).repeat(7, 1)
    assert mean_pairwise_distance(v) == pytest.approx(0, abs=1e-12)
    assert mean_pairwise_distance(v * torch.arange(1, 8.0)[:, None]) == pytest.approx(0, abs=1e-12)  # scale-free


def test_matches_direct_computation_and_chunks():
    torch.manual_seed(0)
    v = torch.randn(50, 6)
    for diag in (False, True):
        assert mean_pairwise_distance(v, include_diagonal=diag) == pytest.approx(direct_distance(v, include_diagonal=diag))
    acc = PairwiseCosine()
    for chunk in v.split(7):
        acc.add(chunk)
    assert acc.distance() == pytest.approx(direct_distance(v))
    assert mean_pairwise_distance(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(1.0)  # opposite


def test_zero_vectors_are_skipped():
    v = torch.randn(5, 3)
    padded = torch.cat([v, torch.zeros(3, 3)])
    assert mean_pairwise_distance(padded) == pytest.approx(direct_distance(v))
    assert mean_pairwise_distance(torch.zeros(4, 3)) is None


@pytest.mark.parametrize("pool,mode", [((1, 2, 2), "spacetime"), ((1, 1, 1), "space")])
def test_block_distances_match_the_full_attention_matrix(pool, mode):
    torch.manual_seed(0)
    block = NonLocalBlock(dim=8, key_pool=pool, mode=mode).eval()
    torch.nn.init.normal_(block.bn.weight)  # non-identity output so z − x is defined
    x = torch.randn(1, 8, 2, 4, 4)
    with torch.no_grad():
        z, attn = block(x, return_attention=True)
    stats = block_distances(block, x, z, chunk=5)
    assert stats["attention"]["dist"] == pytest.approx(direct_distance(attn[0]), rel=1e-5)
    assert stats["input"]["dist"] == pytest.approx(direct_distance(x[0].flatten(1).t()))
    assert stats["output"]["dist"] == pytest.approx(direct_distance((z - x)[0].flatten(1).t()), rel=1e-5)
    assert stats["attention"]["vectors"] == 32


def test_cli_writes_table_and_json(tmp_path):
    cfg = {"MODEL": {"ARCH": "c2d", "NUM_CLASSES": 3}, "RESNET": {"DEPTH": 18, "WIDTH_PER_GROUP": 4},
           "NONLOCAL": {"LOCATION": [[], [1], [1], []]},
           "DATA": {"NUM_FRAMES": 4, "SAMPLING_RATE": 2, "TRAIN_CROP_SIZE": 32, "TEST_CROP_SIZE": 32,
                    "PATH_TO_DATA_DIR": str(tmp_path)},
           "DEVICE": "cpu", "OUTPUT_DIR": str(tmp_path / "run")}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    lines = []
    for i in range(3):
        random_video(tmp_path / f"v{i}.mp4", num_frames=10, size=32, seed=i)
        lines.append(f"{tmp_path / f'v{i}.mp4'} {i}")
    (tmp_path / "test.csv").write_text("\n".join(lines) + "\n")
    result = subprocess.run([sys.executable, "-m", "video_nl", "analyze-attention", "--cfg", str(tmp_path / "cfg.yaml"),
                             "--num-videos", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "s3.nl1" in result.stdout and "n/a" in result.stdout  # untrained: z − x = 0, output undefined
    report = json.loads((tmp_path / "run" / "attention_analysis.json").read_text())
    assert len(report["videos"]) == 2 and set(report["blocks"]) == {"s3.nl1", "s4.nl1"}
    stats = report["blocks"]["s3.nl1"]
    assert 0 < stats["input"]["dist"] < 1 and 0 <= stats["attention"]["dist"] < 1 and stats["output"]["dist"] is None
