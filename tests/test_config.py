"""The config system (``_BASE_`` inheritance, overrides, error messages) and every shipped YAML config."""
from __future__ import annotations

import pathlib

import pytest
import torch

from video_nl.cli import main as cli_main
from video_nl.config import ConfigError, get_default_config, load_config
from video_nl.models import build_model

CONFIGS = sorted(pathlib.Path(__file__).resolve().parents[1].joinpath("configs").rglob("*.yaml"))


def write(path: pathlib.Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path / "root.yaml", "MODEL:\n  NUM_CLASSES: 10\n  DROPOUT_RATE: 0.3\nDATA:\n  NUM_FRAMES: 16\n")
    write(tmp_path / "mid.yaml", "_BASE_: root.yaml\nMODEL:\n  NUM_CLASSES: 20\n")
    child = write(tmp_path / "child.yaml", "_BASE_: mid.yaml\nMODEL:\n  ARCH: i3d\n")
    cfg = load_config(child)
    assert (cfg.MODEL.NUM_CLASSES, cfg.MODEL.DROPOUT_RATE, cfg.DATA.NUM_FRAMES) == (20, 0.3, 16)
    assert cfg.MODEL.ARCH == "i3d" and cfg.RESNET.DEPTH == get_default_config().RESNET.DEPTH
    cfg = load_config(child, ["MODEL.NUM_CLASSES", "7", "RESNET.ZERO_INIT_FINAL_BN", "false",
                              "NONLOCAL.LOCATION", "[[], [1, 3], [1, 3, 5], []]", "SOLVER.BASE_LR", "1"])
    assert cfg.MODEL.NUM_CLASSES == 7 and cfg.RESNET.ZERO_INIT_FINAL_BN is False
    assert cfg.NONLOCAL.LOCATION == [[], [1, 3], [1, 3, 5], []]
    assert isinstance(cfg.SOLVER.BASE_LR, float)


def test_base_cycle_is_an_error(tmp_path):
    a = write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_config(a)


def test_unknown_key_names_closest_keys(tmp_path):
    with pytest.raises(ConfigError, match="MODEL.NUM_CLASSES"):
        load_config(None, ["MODEL.NUM_CLASES", "10"])
    bad = write(tmp_path / "bad.yaml", "RESNET:\n  DEPHT: 50\n")
    with pytest.raises(ConfigError, match="RESNET.DEPTH"):
        load_config(bad)


def test_bad_type_names_key_type_and_value():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["DATA.NUM_FRAMES", "eight"])
    assert all(s in str(err.value) for s in ("DATA.NUM_FRAMES", "int", "eight"))
    with pytest.raises(ConfigError, match="RESNET.DEPTH must be one of"):
        load_config(None, ["RESNET.DEPTH", "42"])
    with pytest.raises(ConfigError, match="odd number"):
        load_config(None, ["MODEL.NUM_CLASSES"])


def test_pathway_nested_location_is_accepted(tmp_path):
    path = write(tmp_path / "psf.yaml", "NONLOCAL:\n  LOCATION: [[[]], [[1, 3]], [[1, 3, 5]], [[]]]\n")
    assert load_config(path).NONLOCAL.LOCATION == [[], [1, 3], [1, 3, 5], []]


def test_cli_prints_user_errors_without_traceback(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["info", "--cfg", str(CONFIGS[0]), "MODEL.NUM_CLASES", "3"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "MODEL.NUM_CLASSES" in err and "Traceback" not in err


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_shipped_config_builds(path):
    cfg = load_config(str(path), ["RESNET.WIDTH_PER_GROUP", "4", "DATA.TRAIN_CROP_SIZE", "32",
                                  "DATA.NUM_FRAMES", "4"])
    model = build_model(cfg).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, cfg.MODEL.NUM_CLASSES)
