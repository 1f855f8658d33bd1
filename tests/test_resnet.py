"""Backbone, head, init and context-block placement of ``video_nl.models``."""
from __future__ import annotations

import pytest
import torch
from helpers.numerics import FP32_DEEP_REL, FP64_REL, assert_close_to_scale

from video_nl.config import get_default_config, merge_overrides
from video_nl.errors import UserError
from video_nl.models import VideoResNet, build_model
from video_nl.models.placement import preset_locations, resolve_locations

torch.set_num_threads(2)

R50 = (3, 4, 6, 3)
R101 = (3, 4, 23, 3)


def tiny_cfg(*overrides):
    """A width-4 config with a 4×32² training clip (overridable)."""
    cfg = get_default_config()
    merge_overrides(cfg, ["RESNET.WIDTH_PER_GROUP", "4", "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32",
                          "MODEL.NUM_CLASSES", "5", *overrides])
    return cfg


def temporal_kernels(model: VideoResNet, conv: str) -> list[list[int]]:
    return [[getattr(b, conv).kernel_size[0] for b in s if hasattr(b, "final_bn")] for s in model.stages()]


# ---------------------------------------------------------------------------------------------- architecture
def test_param_counts_match_pyslowfast_zoo():
    for arch, expected in (("c2d", 24.33e6), ("i3d", 28.04e6), ("slow", 32.45e6)):
        cfg = get_default_config()
        cfg.MODEL.ARCH = arch
        params = sum(p.numel() for p in build_model(cfg).parameters())
        assert abs(params - expected) < 0.01e6, (arch, params)


def test_i3d_inflates_first_1x1_in_released_pattern():
    model = build_model(tiny_cfg("MODEL.ARCH", "i3d"))
    assert model.stem.conv.kernel_size == (5, 7, 7) and model.stem.conv.padding == (2, 3, 3)
    assert temporal_kernels(model, "conv_a") == [[3, 3, 3], [3, 1, 3, 1], [3, 1, 3, 1, 3, 1], [1, 3, 1]]
    assert all(k == 1 for stage in temporal_kernels(model, "conv_b") for k in stage)
    assert all(b.conv_b.kernel_size[1:] == (3, 3) and b.conv_a.kernel_size[1:] == (1, 1) for b in model.blocks())
    r101 = build_model(tiny_cfg("MODEL.ARCH", "i3d", "RESNET.DEPTH", "101"))
    assert temporal_kernels(r101, "conv_a")[2] == [3 if i % 2 == 0 else 1 for i in range(23)]


def test_other_archs_temporal_kernels():
    i3d333 = build_model(tiny_cfg("MODEL.ARCH", "i3d_3x3x3"))
    assert temporal_kernels(i3d333, "conv_b") == [[3, 3, 3], [3, 1, 3, 1], [3, 1, 3, 1, 3, 1], [1, 3, 1]]
    assert all(k == 1 for stage in temporal_kernels(i3d333, "conv_a") for k in stage)
    slow = build_model(tiny_cfg("MODEL.ARCH", "slow"))
    assert temporal_kernels(slow, "conv_a") == [[1] * 3, [1] * 4, [3] * 6, [3] * 3]
    assert slow.stem.conv.kernel_size == (1, 7, 7) and isinstance(slow.pool2, torch.nn.Identity)
    c2d = build_model(tiny_cfg())
    assert all(k == 1 for stage in temporal_kernels(c2d, "conv_a") for k in stage)
    assert c2d.pool2.kernel_size == (2, 1, 1)
    r18 = build_model(tiny_cfg("MODEL.ARCH", "i3d", "RESNET.DEPTH", "18"))
    assert temporal_kernels(r18, "conv_a") == [[3, 3], [3, 1], [3, 1], [1, 3]]
    assert r18.s3.block0.conv_a.stride == (1, 2, 2) and not hasattr(r18.s3.block0, "conv_c")


def test_bottleneck_layout_and_strides():
    model = build_model(tiny_cfg())
    keys = model.state_dict().keys()
    for key in ("stem.conv.weight", "stem.bn.running_var", "s2.block0.shortcut.conv.weight", "s3.block0.conv_b.weight",
                "s3.block0.shortcut.bn.weight", "s5.block2.bn_c.weight", "head.fc.weight", "head.fc.bias"):
        assert key in keys
    assert "s3.block1.shortcut.conv.weight" not in keys
    assert model.s3.block0.conv_b.stride == (1, 2, 2) and model.s3.block0.conv_a.stride == (1, 1, 1)
    assert model.s5.block0.conv_c.out_channels == 4 * 4 * 8 and model.s2.block0.conv_a.out_channels == 4
    assert model.head.fc.weight.shape == (5, 128)


@pytest.mark.parametrize("overrides, clip, res5", [
    (("DATA.NUM_FRAMES", "8", "DATA.TRAIN_CROP_SIZE", "224"), (8, 224, 224), (4, 7, 7)),
    (("RESNET.STEM_POOL_PADDING", "False", "DATA.NUM_FRAMES", "8", "DATA.TRAIN_CROP_SIZE", "224"), (8, 224, 224),
     (4, 7, 7)),
    (("MODEL.ARCH", "i3d"), (4, 32, 32), (2, 1, 1)),
    (("MODEL.ARCH", "slow", "DATA.TRAIN_CROP_SIZE", "64"), (4, 64, 64), (4, 2, 2)),
    (("RESNET.STEM", "paper", "DATA.NUM_FRAMES", "16"), (16, 32, 32), (2, 1, 1)),
    (("RESNET.TEMPORAL_POOL", "False",), (4, 32, 32), (4, 1, 1)),
])
def test_output_shapes(overrides, clip, res5):
    model = build_model(tiny_cfg(*overrides)).eval()
    x = torch.randn(1, 3, *clip)
    with torch.no_grad():
        assert tuple(model.forward_res5(x).shape[2:]) == res5 == model.head.pool_size == model.output_size(*clip)
        assert model(x).shape == (1, 5)
        assert model.forward_features(x).shape == (1, model.head.fc.in_features)


def test_too_small_input_is_a_user_error():
    with pytest.raises(UserError, match="too small"):
        build_model(tiny_cfg("DATA.NUM_FRAMES", "1"))


# ---------------------------------------------------------------------------------------------- head
def test_fully_convolutional_eval_is_mean_softmax_over_windows():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("MODEL.FC_INIT_STD", "1.0", "RESNET.ZERO_INIT_FINAL_BN", "False")).eval()
    x = torch.randn(2, 3, 4, 64, 64)  # res5 2×2×2 against a 2×1×1 training window → 2×2 positions
    with torch.no_grad():
        out = model(x)
        feats = model.forward_res5(x)
        probs = [model.head.fc(feats[:, :, :, i, j].mean(dim=2)).softmax(dim=1) for i in range(2) for j in range(2)]
        mean = torch.stack(probs).mean(dim=0)
        assert_close_to_scale(out.exp(), mean, rel=FP32_DEEP_REL)
        assert_close_to_scale(out.softmax(dim=1), mean, rel=FP32_DEEP_REL)
        model.head.act = "none"
        logits = [model.head.fc(feats[:, :, :, i, j].mean(dim=2)) for i in range(2) for j in range(2)]
        assert_close_to_scale(model(x), torch.stack(logits).mean(dim=0), rel=FP32_DEEP_REL)
        # At the training size the head returns plain logits of the globally pooled map.
        small = torch.randn(2, 3, 4, 32, 32)
        assert_close_to_scale(model(small), model.head.fc(model.forward_features(small)), rel=FP32_DEEP_REL)
    model.train()
    assert model(x).shape == (2, 5)  # training always pools globally


# ---------------------------------------------------------------------------------------------- init
@pytest.mark.parametrize("zero_init", [True, False])
def test_init(zero_init):
    torch.manual_seed(0)
    model = build_model(tiny_cfg("RESNET.ZERO_INIT_FINAL_BN", str(zero_init), "MODEL.FC_INIT_STD", "0.05",
                                 "MODEL.NUM_CLASSES", "400"))
    finals = {id(b.final_bn) for b in model.blocks()}
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            expected = 0.0 if (zero_init and id(m) in finals) else 1.0
            assert torch.all(m.weight == expected) and torch.all(m.bias == 0)
    fc = model.head.fc
    assert torch.all(fc.bias == 0) and abs(fc.weight.std().item() - 0.05) < 0.005
    conv = model.s4.block0.conv_a  # MSRA fan_out: std = sqrt(2 / (out · kernel volume))
    expected_std = (2 / (conv.out_channels * conv.weight[0, 0].numel())) ** 0.5
    assert abs(conv.weight.std().item() - expected_std) < 0.15 * expected_std


# ---------------------------------------------------------------------------------------------- placement
def test_presets():
    assert preset_locations("1", R50) == [[], [], [4], []]
    assert preset_locations("1", R101) == [[], [], [21], []]
    assert preset_locations("5", R50) == preset_locations("5", R101) == [[], [1, 3], [1, 3, 5], []]
    assert preset_locations("5_caffe2", R50) == [[], [1, 3], [1, 3, 5], []]
    assert preset_locations("5_caffe2", R101) == [[], [1, 3], [6, 13, 20], []]
    assert preset_locations("10", R50) == [[], [0, 1, 2, 3], [0, 1, 2, 3, 4, 5], []]
    assert preset_locations("10", R101) == [[], [0, 1, 2, 3], [2, 6, 10, 14, 18, 22], []]
    for preset in ("1", "5", "5_caffe2", "10"):
        for depths in (R50, R101, (3, 8, 36, 3)):
            locs = resolve_locations(preset=preset, location=[[]] * 4, depths=depths, depth=0)
            assert all(0 <= i < n for idx, n in zip(locs, depths) for i in idx)


def test_location_validation_names_stage_depth():
    resolve_locations(preset="", location=[[0], [], [5], [2]], depths=R50, depth=50)
    with pytest.raises(UserError, match=r"res4 of a ResNet-50 has 6 blocks"):
        resolve_locations(preset="", location=[[], [], [6], []], depths=R50, depth=50)
    with pytest.raises(UserError, match=r"res3 of a ResNet-18 has 2 blocks"):
        resolve_locations(preset="5", location=[[]] * 4, depths=(2, 2, 2, 2), depth=18)
    with pytest.raises(UserError, match="repeats"):
        resolve_locations(preset="", location=[[], [1, 1], [], []], depths=R50, depth=50)
    with pytest.raises(UserError, match="has 3 blocks"):
        build_model(tiny_cfg("NONLOCAL.LOCATION", "[[], [], [], [3]]"))


# ---------------------------------------------------------------------------------------------- invariances
def test_c2d_is_invariant_to_time_reversal_in_eval():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("MODEL.FC_INIT_STD", "1.0", "RESNET.ZERO_INIT_FINAL_BN", "False",
                                 "DATA.NUM_FRAMES", "8")).eval()
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():  # exact in exact arithmetic; fp32 sums in another order (logits ~14: seen 2.3e-5 apart)
        assert_close_to_scale(model(torch.flip(x, dims=[2])), model(x), rel=FP32_DEEP_REL)


def test_c2d_nonlocal_is_invariant_to_time_reversal_in_eval():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("MODEL.FC_INIT_STD", "1.0", "RESNET.ZERO_INIT_FINAL_BN", "False",
                                 "DATA.NUM_FRAMES", "8", "DATA.TRAIN_CROP_SIZE", "64", "NONLOCAL.PRESET", "'5'"))
    for block in model.context_blocks():  # make the blocks non-trivial (they start as the identity)
        torch.nn.init.normal_(block.module.bn.weight)
    # float64: with random (untrained) weights the outputs reach ~1e3, where fp32 summation order alone
    # differs by ~1e-2; the property itself is exact.
    model.eval().double()
    x = torch.randn(2, 3, 8, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert_close_to_scale(model(torch.flip(x, dims=[2])), model(x), rel=FP64_REL)


# ---------------------------------------------------------------------------------------------- context blocks
@pytest.mark.parametrize("kind, prefix", [("nonlocal", "nl"), ("gc", "gc"), ("snl", "snl"), ("se", "se"),
                                          ("latentgnn", "lgnn")])
def test_every_context_type_is_placed_and_left_at_identity(kind, prefix):
    model = build_model(tiny_cfg("CONTEXT.TYPE", kind, "NONLOCAL.PRESET", "'1'"))
    (info,) = model.context_blocks()
    assert (info.name, info.type, info.stage, info.index, info.channels) == (f"s4.{prefix}4", kind, 4, 4, 64)
    assert info.module is getattr(model.s4, f"{prefix}4")
    assert [name for name, _ in model.s4.named_children()] == [f"block{i}" for i in range(5)] + [f"{prefix}4",
                                                                                                 "block5"]
    x = torch.randn(2, 64, 2, 2, 2)
    torch.testing.assert_close(info.module.eval()(x), x)  # the backbone init left its identity init alone
    backbone = {k for k in model.state_dict() if not k.startswith(f"s4.{prefix}4.")}
    assert backbone == build_model(tiny_cfg()).state_dict().keys()


@pytest.mark.parametrize("overrides, expected", [
    ((), {"s2.nl1": (1, 4, 4), "s3.nl1": (2, 8, 8), "s4.nl1": (2, 16, 16), "s5.nl1": (2, 32, 32)}),
    (("MODEL.ARCH", "slow"), {"s2.nl1": (1, 4, 4), "s3.nl1": (1, 8, 8), "s4.nl1": (1, 16, 16),
                              "s5.nl1": (1, 32, 32)}),
    (("RESNET.STEM", "paper", "DATA.NUM_FRAMES", "16"), {"s2.nl1": (4, 4, 4), "s3.nl1": (8, 8, 8),
                                                         "s4.nl1": (8, 16, 16), "s5.nl1": (8, 32, 32)}),
])
def test_feature_strides_match_the_maps_context_blocks_see(overrides, expected):
    model = build_model(tiny_cfg("NONLOCAL.LOCATION", "[[1], [1], [1], [1]]", "DATA.TRAIN_CROP_SIZE", "64",
                                 *overrides)).eval()
    assert model.feature_strides() == expected
    clip = (model.input_size[0], 64, 64)
    seen = {}
    for info in model.context_blocks():
        info.module.register_forward_pre_hook(lambda m, inp, name=info.name: seen.update({name: inp[0].shape}))
    with torch.no_grad():
        model(torch.randn(1, 3, *clip))
    for name, stride in expected.items():
        assert tuple(seen[name][2:]) == tuple(n // s for n, s in zip(clip, stride))
