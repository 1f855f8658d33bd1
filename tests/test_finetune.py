"""Fine-tuning from a checkpoint of another label set: TRAIN.CHECKPOINT_REINIT_HEAD, clear errors instead of
silent partial loads, and the dataset configs (Charades, UCF101, HMDB51, SSv2)."""
from __future__ import annotations

import pytest
import torch

from video_nl.config import load_config
from video_nl.engine.logging import StatsLogger
from video_nl.engine.resume import init_weights
from video_nl.errors import UserError
from video_nl.models import build_model

TINY = ["RESNET.DEPTH", "18", "RESNET.WIDTH_PER_GROUP", "4", "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32",
        "MODEL.ARCH", "i3d"]


@pytest.fixture(scope="module")
def kinetics_checkpoint(tmp_path_factory):
    """A "pre-trained" 5-class I3D checkpoint (weights perturbed so that a load is visible)."""
    torch.manual_seed(1)
    model = build_model(load_config(None, TINY + ["MODEL.NUM_CLASSES", "5"]))
    state = {k: v + 0.5 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("ckpt") / "kinetics.pyth"
    torch.save({"model_state": state, "epoch": 196}, path)
    return path, state


def _init(tmp_path, checkpoint, *overrides):
    cfg = load_config(None, TINY + ["TRAIN.CHECKPOINT_FILE_PATH", str(checkpoint), *overrides])
    torch.manual_seed(2)
    model = build_model(cfg)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    init_weights(cfg, model, StatsLogger(output_dir=str(tmp_path), enabled=True, tb_dir=None))
    return model.state_dict(), fresh


def test_another_class_count_needs_the_explicit_option(tmp_path, kinetics_checkpoint, capsys):
    path, _ = kinetics_checkpoint
    with pytest.raises(UserError, match=r"head\.fc\.weight \[5, 32\] vs model \[3, 32\].*"
                                        r"TRAIN\.CHECKPOINT_REINIT_HEAD True"):
        _init(tmp_path, path, "MODEL.NUM_CLASSES", "3")


def test_reinit_head_loads_the_backbone_and_logs_the_fresh_classifier(tmp_path, kinetics_checkpoint, capsys):
    path, source = kinetics_checkpoint
    loaded, fresh = _init(tmp_path, path, "MODEL.NUM_CLASSES", "3", "TRAIN.CHECKPOINT_REINIT_HEAD", "True")
    backbone = [k for k in loaded if not k.startswith("head.")]
    assert backbone and all(torch.equal(loaded[k], source[k]) for k in backbone)
    assert all(torch.equal(loaded[k], fresh[k]) for k in ("head.fc.weight", "head.fc.bias"))
    log = capsys.readouterr().out
    assert "re-initialised the classifier (TRAIN.CHECKPOINT_REINIT_HEAD): head.fc.bias [3] (checkpoint [5])" in log
    # with the same class count the option still re-initialises (a new label set), never loads the old head
    same, fresh = _init(tmp_path, path, "MODEL.NUM_CLASSES", "5", "TRAIN.CHECKPOINT_REINIT_HEAD", "True")
    assert torch.equal(same["head.fc.weight"], fresh["head.fc.weight"])
    # and without it, a matching classifier is loaded like every other tensor
    plain, _ = _init(tmp_path, path, "MODEL.NUM_CLASSES", "5")
    assert torch.equal(plain["head.fc.weight"], source["head.fc.weight"])


def test_another_architecture_is_an_error_and_missing_blocks_are_listed(tmp_path, kinetics_checkpoint, capsys):
    path, _ = kinetics_checkpoint
    with pytest.raises(UserError, match=r"another architecture.*MODEL\.ARCH") as err:
        _init(tmp_path, path, "MODEL.NUM_CLASSES", "5", "MODEL.ARCH", "c2d", "TRAIN.CHECKPOINT_REINIT_HEAD", "True")
    assert "stem.conv.weight [4, 3, 5, 7, 7] vs model [4, 3, 1, 7, 7]" in str(err.value)
    # an I3D baseline checkpoint into I3D-NL: the non-local block keeps its init, and the log names it
    _init(tmp_path, path, "MODEL.NUM_CLASSES", "5", "NONLOCAL.LOCATION", "[[], [1], [], []]")
    assert "kept the initialisation of" in capsys.readouterr().out


@pytest.mark.parametrize("name, classes, multi_label, flip", [
    ("Charades/I3D_NLN_8x8_R50", 157, True, True), ("Charades/C2D_8x8_R50", 157, True, True),
    ("UCF101/I3D_NLN_8x8_R50", 101, False, True), ("HMDB51/I3D_NLN_8x8_R50", 51, False, True),
    ("SSv2/I3D_NLN_8x8_R50", 174, False, False)])
def test_fine_tuning_configs(name, classes, multi_label, flip):
    cfg = load_config(f"configs/{name}.yaml")
    assert (cfg.MODEL.NUM_CLASSES, cfg.DATA.MULTI_LABEL, cfg.DATA.RANDOM_FLIP) == (classes, multi_label, flip)
    assert cfg.TRAIN.CHECKPOINT_FILE_PATH and cfg.TRAIN.CHECKPOINT_REINIT_HEAD and not cfg.TRAIN.CHECKPOINT_INFLATE
    assert cfg.MODEL.ARCH == name.split("/")[1].split("_")[0].lower()
    assert any(cfg.NONLOCAL.LOCATION) == ("NLN" in name)
    if multi_label:
        assert (cfg.MODEL.LOSS_FUNC, cfg.MODEL.HEAD_ACT, cfg.TEST.ENSEMBLE_METHOD) == ("bce_logit", "sigmoid", "max")
    assert cfg.SOLVER.WARMUP_EPOCHS < cfg.SOLVER.MAX_EPOCH <= 60  # a fine-tuning schedule, not the 196 epochs
