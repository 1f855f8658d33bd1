"""Weight import: `video-nl convert` from every source, 2D inflation, partial/unsafe/mismatched files.

Source files are written in each codebase's own layout: by PyTorchVideo and torchvision themselves, and for
PySlowFast, Caffe2 and MMAction2 by the exporters below, which spell out those layouts independently of the
importers (from docs/reference key tables). Every model has random BN statistics and affine parameters so that
a BN (or a non-local block) that is not carried over changes the outputs.
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from helpers.numerics import FP32_DEEP_REL, assert_close_to_scale
from torch import nn

from video_nl import build_model, cli, load_checkpoint, load_config
from video_nl.models.weights.common import WeightImportError
from video_nl.models.weights.inflate import inflate_state_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "Kinetics"
SMALL = ["DATA.TRAIN_CROP_SIZE", "64", "MODEL.NUM_CLASSES", "10"]  # res5 map 4x2x2 = the head's window
NARROW = ["RESNET.WIDTH_PER_GROUP", "8"]  # same key layout as R50, 1/64 of the compute


def _cfg(name: str, *overrides: str):
    return load_config(str(CONFIGS / name), [*SMALL, *overrides])


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random BN statistics/affines (incl. the zero-initialised ones), non-zero biases, a classifier with
    logits of order 1; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            elif isinstance(m, (nn.Conv3d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, nn.Linear):  # the usual 0.01-std classifier would give logits of ~0.01
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.05)
    return model.eval()


def _clip(t: int = 8, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, t, size, size, generator=torch.Generator().manual_seed(seed))


def _convert(capsys, source: str, cfg_name: str, src: Path, dst: Path, *extra: str) -> tuple[int, str]:
    """Run `video-nl convert` in-process; returns (exit code, stdout + stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["convert", "--from", source, "--cfg", str(CONFIGS / cfg_name), str(src), str(dst), *SMALL, *extra])
    out = capsys.readouterr()
    return exit_info.value.code, out.out + out.err


def _load(path: Path, cfg) -> nn.Module:
    """The converted checkpoint loaded (strictly) the way every command loads --checkpoint."""
    model = build_model(cfg)
    load_checkpoint(model, str(path))
    return model.eval()


# ----------------------------------------------------------------------------------------------- PyTorchVideo
@pytest.mark.parametrize("arch", ["c2d", "i3d"])
def test_pytorchvideo_hub_resnet_gives_the_same_logits(tmp_path, capsys, arch):
    from pytorchvideo.models.hub import resnet as hub

    theirs = _randomise(getattr(hub, f"{arch}_r50")(pretrained=False, model_num_class=10,
                                                   head_pool_kernel_size=(4, 2, 2)), seed=1)
    torch.save({"model_state": theirs.state_dict()}, tmp_path / "src.pyth")
    cfg_name = f"{arch.upper()}_8x8_R50.yaml"
    code, log = _convert(capsys, "pytorchvideo", cfg_name, tmp_path / "src.pyth", tmp_path / "ours.pyth")
    assert code == 0, log
    ours = _load(tmp_path / "ours.pyth", _cfg(cfg_name))
    clip = _clip()
    with torch.no_grad():
        assert_close_to_scale(ours(clip), theirs(clip), rel=FP32_DEEP_REL)  # two implementations of one net
    meta = torch.load(tmp_path / "ours.pyth", weights_only=True)["meta"]
    assert meta["source"] == "pytorchvideo" and meta["input_convention"]["name"] == "rgb_0.45_0.225"
    assert meta["unmapped_source_keys"] == [] and meta["missing_model_keys"] == []


# ----------------------------------------------------------------------------------------------- torchvision
def _torchvision_features(net: torchvision.models.ResNet, image: torch.Tensor) -> torch.Tensor:
    """The 2D network's res5 map (before avgpool)."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(image))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def test_inflated_c2d_reproduces_the_2d_network_on_a_static_clip(tmp_path, capsys):
    """C2D kernels are 1xkxk: every frame is processed exactly as the 2D network processes the image."""
    net = _randomise(torchvision.models.resnet18(), seed=2)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "r18.pth")
    code, log = _convert(capsys, "torchvision2d", "C2D_8x8_R50.yaml", tmp_path / "r18.pth", tmp_path / "c2d.pyth",
                         "RESNET.DEPTH", "18")
    assert code == 0, log
    meta = torch.load(tmp_path / "c2d.pyth", weights_only=True)["meta"]
    assert meta["skipped_source_keys"] == ["fc.weight", "fc.bias"]
    assert meta["left_initialised_keys"] == ["head.fc.weight", "head.fc.bias"]
    model = _load(tmp_path / "c2d.pyth", _cfg("C2D_8x8_R50.yaml", "RESNET.DEPTH", "18"))
    image = _clip(t=1)[:, :, 0]
    with torch.no_grad():
        expected = _torchvision_features(net, image).mean(dim=(2, 3))
        assert_close_to_scale(model.forward_features(image[:, :, None].expand(-1, -1, 8, -1, -1)), expected,
                              rel=FP32_DEEP_REL)


def test_inflated_i3d_reproduces_the_2d_network_away_from_the_clip_ends():
    """I3D with repeat-and-divide inflation on a clip of identical frames.

    A t-tap temporal conv whose window lies inside the clip sums t copies of (2D kernel / t) over identical
    frames, which is the 2D conv: those frames reproduce the 2D activations exactly. Frames within the
    temporal radius of a clip end see the conv's zero padding (as in every released I3D), so the globally
    pooled features differ from the 2D network's; replicate temporal padding would make them equal but would
    break equivalence with the released Caffe2/PySlowFast/PyTorchVideo/MMAction2 I3D models, which pad with
    zeros. So this test compares the res5 frames that no padding reaches. Counting edge frames touched by
    padding for I3D R18 on 32 frames: stem (5-tap) 2, res2 (two 3-tap convs) 4, pool2 -> 2 at res3, then
    one 3-tap conv in each of res3, res4, res5 -> 5 of the 16 res5 frames at each end: frames 5..10 are exact.
    """
    net = _randomise(torchvision.models.resnet18(), seed=3)
    model = build_model(_cfg("I3D_8x8_R50.yaml", "RESNET.DEPTH", "18", "DATA.NUM_FRAMES", "32"))
    missing, unexpected = model.load_state_dict(inflate_state_dict(net.state_dict(), model), strict=False)
    assert missing == ["head.fc.weight", "head.fc.bias"] and unexpected == []
    model.eval()
    assert model.stem.conv.weight.shape[2] == 5 and model.s2.block0.conv_a.weight.shape[2] == 3
    image = _clip(t=1, seed=4)[:, :, 0]
    with torch.no_grad():
        expected = _torchvision_features(net, image)
        res5 = model.forward_res5(image[:, :, None].expand(-1, -1, 32, -1, -1))
    assert res5.shape[2] == 16
    for t in range(5, 11):
        assert_close_to_scale(res5[:, :, t], expected, rel=FP32_DEEP_REL)


def test_inflate_state_dict_refuses_a_deeper_2d_network():
    model = build_model(_cfg("I3D_8x8_R50.yaml", "RESNET.DEPTH", "18"))
    with pytest.raises(WeightImportError, match="no place in the model"):
        inflate_state_dict(torchvision.models.resnet34().state_dict(), model)


# ----------------------------------------------------------------------------------------------- exporters
_BN_C2 = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
_KEY = re.compile(r"^s(\d)\.(block|nl)(\d+)\.(.+)$")


def _slowfast_key(key: str) -> str:
    """video_nl key -> PySlowFast key (spelled from PySlowFast's module names)."""
    if key.startswith("stem."):
        return "s1.pathway0_stem." + key[len("stem."):]
    if key.startswith("head.fc."):
        return "head.projection." + key[len("head.fc."):]
    stage, kind, index, rest = _KEY.match(key).groups()
    if kind == "nl":
        return f"s{stage}.pathway0_nonlocal{index}.{rest}"  # conv_theta/conv_phi/conv_g/conv_out/bn
    module, param = rest.rsplit(".", 1)
    name = {"shortcut.conv": "branch1", "shortcut.bn": "branch1_bn"}.get(module) or (
        f"branch2.{module[-1]}" + ("_bn" if module.startswith("bn") else ""))
    return f"s{stage}.pathway0_res{index}.{name}.{param}"


def _caffe2_blob(key: str) -> str:
    """video_nl key -> Caffe2 blob name (video-nonlocal-net naming)."""
    module, param = key.rsplit(".", 1)
    suffix = _BN_C2[param] if "bn" in module.split(".")[-1] else {"weight": "w", "bias": "b"}[param]
    if module == "stem.conv":
        return "conv1_w"
    if module == "stem.bn":
        return f"res_conv1_bn_{suffix}"
    if module == "head.fc":
        return f"pred_{suffix}"
    stage, kind, index, rest = _KEY.match(module).groups()
    if kind == "nl":
        part = "bn" if rest == "bn" else rest.removeprefix("conv_")
        return f"nonlocal_conv{stage}_{index}_{part}_{suffix}"
    branch = "branch1" if rest.startswith("shortcut") else f"branch2{rest[-1]}"
    return f"res{stage}_{index}_{branch}_" + ("bn_" if "bn" in rest else "") + suffix


def _mmaction_key(key: str) -> str | None:
    """video_nl key -> MMAction2 ResNet3d/NonLocal3d key (None: mmcv's conv_out has no bias)."""
    if key.startswith("stem."):
        return "backbone.conv1." + key[len("stem."):]
    if key.startswith("head.fc."):
        return "cls_head.fc_cls." + key[len("head.fc."):]
    stage, kind, index, rest = _KEY.match(key).groups()
    prefix = f"backbone.layer{int(stage) - 1}.{index}."
    if kind == "nl":
        module, param = rest.rsplit(".", 1)
        name = {"conv_theta": "theta.conv", "conv_phi": "phi.0.conv", "conv_g": "g.0.conv",
                "conv_out": "conv_out.conv", "bn": "conv_out.bn"}[module]
        return None if name == "conv_out.conv" and param == "bias" else f"{prefix}non_local_block.{name}.{param}"
    rest = rest.replace("shortcut.", "downsample.")
    for ours, number in (("_a.", "1."), ("_b.", "2."), ("_c.", "3.")):
        if rest.startswith(("conv" + ours, "bn" + ours)):
            kind_ = "conv" if rest.startswith("conv") else "bn"
            rest = f"conv{number}{kind_}.{rest.split('.', 1)[1]}"
    return prefix + rest


def _source_model(seed: int, *overrides: str) -> tuple[nn.Module, torch.Tensor]:
    """A random-init narrow I3D-NLN R50 (NL blocks not the identity) and its logits on the test clip."""
    model = _randomise(build_model(_cfg("I3D_NLN_8x8_R50.yaml", *NARROW, *overrides)), seed=seed)
    with torch.no_grad():
        return model, model(_clip())


# ----------------------------------------------------------------------------------------------- PySlowFast
def test_slowfast_checkpoint_round_trip(tmp_path, capsys):
    model, logits = _source_model(5)
    state = {_slowfast_key(k): v for k, v in model.state_dict().items()}
    assert "s3.pathway0_nonlocal1.conv_theta.weight" in state and "s4.pathway0_res0.branch1_bn.running_var" in state
    torch.save({"model_state": state, "epoch": 196}, tmp_path / "I3D_NLN.pyth")
    code, log = _convert(capsys, "slowfast", "I3D_NLN_8x8_R50.yaml", tmp_path / "I3D_NLN.pyth",
                         tmp_path / "o.pyth", *NARROW)
    assert code == 0, log
    with torch.no_grad():
        assert_close_to_scale(_load(tmp_path / "o.pyth", _cfg("I3D_NLN_8x8_R50.yaml", *NARROW))(_clip()), logits)
    meta = torch.load(tmp_path / "o.pyth", weights_only=True)["meta"]
    assert meta["nl_instantiation"] == "softmax" and meta["video_nl_version"]


def test_partial_load_is_refused_unless_allowed(tmp_path, capsys):
    model, _ = _source_model(6)
    state = {_slowfast_key(k): v for k, v in model.state_dict().items() if ".nl" not in k}
    torch.save({"model_state": state}, tmp_path / "no_nl.pyth")
    code, log = _convert(capsys, "slowfast", "I3D_NLN_8x8_R50.yaml", tmp_path / "no_nl.pyth",
                         tmp_path / "o.pyth", *NARROW)
    assert code == 2 and "s3.nl1.conv_theta.weight" in log and "--allow-partial" in log
    assert "Traceback" not in log and not (tmp_path / "o.pyth").exists()
    code, log = _convert(capsys, "slowfast", "I3D_NLN_8x8_R50.yaml", tmp_path / "no_nl.pyth",
                         tmp_path / "o.pyth", *NARROW, "--allow-partial")
    assert code == 0, log
    meta = torch.load(tmp_path / "o.pyth", weights_only=True)["meta"]
    assert len(meta["missing_model_keys"]) == 5 * 12 and "s4.nl5.bn.running_var" in meta["missing_model_keys"]


def test_unmapped_source_weights_are_refused(tmp_path, capsys):
    model, _ = _source_model(7)
    state = {_slowfast_key(k): v for k, v in model.state_dict().items()}
    torch.save({"model_state": state}, tmp_path / "nl.pyth")
    code, log = _convert(capsys, "slowfast", "I3D_8x8_R50.yaml", tmp_path / "nl.pyth", tmp_path / "o.pyth", *NARROW)
    assert code == 2 and "s3.pathway0_nonlocal1.conv_theta.weight" in log and "no place in the model" in log


def test_shape_mismatch_names_the_key_and_both_shapes(tmp_path, capsys):
    model, _ = _source_model(8)
    state = {_slowfast_key(k): v for k, v in model.state_dict().items()}
    torch.save({"model_state": state}, tmp_path / "i3d.pyth")
    code, log = _convert(capsys, "slowfast", "C2D_8x8_R50.yaml", tmp_path / "i3d.pyth", tmp_path / "o.pyth", *NARROW,
                         "CONTEXT.TYPE", "nonlocal", "NONLOCAL.LOCATION", "[[],[1,3],[1,3,5],[]]")
    assert code == 2, log
    assert "s1.pathway0_stem.conv.weight has shape (8, 3, 5, 7, 7)" in log and "(8, 3, 1, 7, 7)" in log


# ----------------------------------------------------------------------------------------------- Caffe2
def _write_caffe2(path: Path, model: nn.Module, *, pred_5d: bool) -> None:
    blobs = {_caffe2_blob(k): v.numpy().copy() for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    if pred_5d:
        blobs["pred_w"] = blobs["pred_w"][:, :, None, None, None]
    blobs.update({"lr": np.array([0.01], np.float32), "model_iter": np.array([400000], np.int64),
                  "conv1_w_momentum": np.zeros_like(blobs["conv1_w"])})
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)


@pytest.mark.parametrize("pred_5d", [False, True])
def test_caffe2_pkl_round_trip(tmp_path, capsys, pred_5d):
    model, logits = _source_model(9, "RESNET.STEM_POOL_PADDING", "False")
    _write_caffe2(tmp_path / "i3d_nl.pkl", model, pred_5d=pred_5d)
    code, log = _convert(capsys, "caffe2", "I3D_NLN_8x8_R50.yaml", tmp_path / "i3d_nl.pkl",
                         tmp_path / "o.pyth", *NARROW)
    assert code == 0, log
    assert "STEM_POOL_PADDING" in log  # --cfg keeps the padded pool: the user is told to override it
    meta = torch.load(tmp_path / "o.pyth", weights_only=True)["meta"]
    assert meta["expected_cfg"]["RESNET.STEM_POOL_PADDING"] is False
    assert sorted(meta["skipped_source_keys"]) == ["conv1_w_momentum", "lr", "model_iter"]
    model2 = _load(tmp_path / "o.pyth", _cfg("I3D_NLN_8x8_R50.yaml", *NARROW, "RESNET.STEM_POOL_PADDING", "False"))
    with torch.no_grad():
        assert_close_to_scale(model2(_clip()), logits)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_unsafe_caffe2_pickle_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"blobs": {"conv1_w": _Payload(marker)}}, f, protocol=2)
    code, log = _convert(capsys, "caffe2", "C2D_8x8_R50.yaml", tmp_path / "evil.pkl", tmp_path / "o.pyth", *NARROW)
    assert code == 2 and "system" in log and "Refused" in log
    assert not marker.exists() and not (tmp_path / "o.pyth").exists()


# ----------------------------------------------------------------------------------------------- MMAction2
def test_mmaction2_checkpoint_round_trip(tmp_path, capsys):
    model, _ = _source_model(10)
    with torch.no_grad():  # mmcv's output conv has no bias (a BN follows)
        for block in model.context_blocks():
            block.module.conv_out.bias.zero_()
        logits = model(_clip())
    state = {name: v for k, v in model.state_dict().items() if (name := _mmaction_key(k)) is not None}
    assert "backbone.layer2.1.non_local_block.phi.0.conv.weight" in state
    assert "backbone.layer1.0.downsample.conv.weight" in state and "backbone.layer4.2.conv3.bn.bias" in state
    torch.save({"meta": {"epoch": 100}, "state_dict": state}, tmp_path / "i3d_nl.pth")
    code, log = _convert(capsys, "mmaction2", "I3D_NLN_8x8_R50.yaml", tmp_path / "i3d_nl.pth",
                         tmp_path / "o.pyth", *NARROW)
    assert code == 0, log
    checkpoint = torch.load(tmp_path / "o.pyth", weights_only=True)
    assert len(checkpoint["meta"]["synthesised_keys"]) == 5 and checkpoint["cfg"]["MODEL"]["INPUT_CONVENTION"] == (
        "rgb_imagenet")
    assert "DATA.MEAN" in log  # the cfg normalises with 0.45/0.225; the user is told the source's values
    with torch.no_grad():
        assert_close_to_scale(_load(tmp_path / "o.pyth", _cfg("I3D_NLN_8x8_R50.yaml", *NARROW))(_clip()), logits)
