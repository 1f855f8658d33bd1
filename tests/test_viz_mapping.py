"""Input ↔ feature coordinate mapping of the attention visualiser (video_nl.viz.mapping)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from video_nl.config import get_default_config
from video_nl.models.build import build_model
from video_nl.viz.mapping import AxisMap, BlockGeometry, block_geometry, feature_offsets, key_windows


def tiny_cfg(arch: str = "c2d", *, frames: int = 8, size: int = 64, stem: str = "default", pool_padding: bool = True):
    cfg = get_default_config()
    cfg.MODEL.ARCH, cfg.MODEL.NUM_CLASSES = arch, 3
    cfg.RESNET.DEPTH, cfg.RESNET.WIDTH_PER_GROUP = 18, 4
    cfg.RESNET.STEM, cfg.RESNET.STEM_POOL_PADDING = stem, pool_padding
    cfg.NONLOCAL.LOCATION = [[], [1], [1], []]
    cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE = frames, size
    return cfg


class _AvgAsMax(nn.MaxPool3d):
    """Same geometry as the max-pool it replaces, but every input of a window gets gradient (symmetric support)."""

    def forward(self, x):
        return F.avg_pool3d(x, self.kernel_size, self.stride, self.padding)


@pytest.mark.parametrize("arch,stem,pool_padding,frames", [
    ("c2d", "default", True, 8), ("i3d", "default", True, 8), ("c2d", "paper", True, 32),
    ("i3d", "paper", False, 32)])
def test_cell_centres_are_receptive_field_centres(arch, stem, pool_padding, frames):
    """The mapped centre of an interior feature cell is the midpoint of its receptive field, found by gradients."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(arch, frames=frames, stem=stem, pool_padding=pool_padding)).eval()
    model.stem.pool = _AvgAsMax(model.stem.pool.kernel_size, model.stem.pool.stride, model.stem.pool.padding)
    if isinstance(model.pool2, nn.MaxPool3d):
        model.pool2 = _AvgAsMax(model.pool2.kernel_size, model.pool2.stride)
    with torch.no_grad():  # positive convs: every path is active; final BNs stay 0 (shortcut path only)
        for m in model.modules():
            if isinstance(m, nn.Conv3d):
                m.weight.abs_()
    captured = {}
    for block in model.context_blocks():
        block.module.register_forward_pre_hook(lambda _m, a, n=block.name: captured.__setitem__(n, a[0]))
    x = torch.rand(1, 3, frames, 64, 64).add_(1).requires_grad_()
    model(x)
    for block in model.context_blocks():
        feat = captured[block.name]
        geometry = block_geometry(model, block.name, block.stage, feat.shape[2:])
        cell = tuple(n // 2 for n in feat.shape[2:])
        (grad,) = torch.autograd.grad(feat[0, :, cell[0], cell[1], cell[2]].sum(), x, retain_graph=True)
        support = grad[0].abs().sum(0)
        for axis, centre in enumerate(geometry.cell_centre(cell)):
            used = support.sum(tuple(d for d in range(3) if d != axis)).nonzero().flatten()
            assert (used.min() + used.max()).item() / 2 == pytest.approx(centre), (block.name, axis)


def test_offsets_of_the_default_c2d():
    model = build_model(tiny_cfg("c2d"))
    assert feature_offsets(model, 2) == (0.0, 0.0, 0.0)
    assert feature_offsets(model, 3) == (0.5, 0.0, 0.0)  # 2x1x1 temporal pool: cell t = frames 2t, 2t+1
    geometry = block_geometry(model, "s3.nl1", 3, (4, 8, 8), key_pool=(1, 2, 2))
    assert [geometry.query_cell(t, 0, 0)[0] for t in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [geometry.query_cell(0, y, 0)[1] for y in (0, 3, 4, 11, 12, 63)] == [0, 0, 1, 1, 2, 7]


def test_key_windows_floor_and_groups():
    assert key_windows(7, 2) == [(0, 2), (2, 4), (4, 6)]
    assert key_windows(6, 2, groups=2) == [(0, 2), (3, 5)]  # each group of 3 frames pools to 1 key frame
    assert key_windows(4, 1) == [(0, 1), (1, 2), (2, 3), (3, 4)]


def test_to_input_places_each_key_on_its_pixels():
    geometry = BlockGeometry((AxisMap(4, 2, 0.5), AxisMap(7, 8, 0.0), AxisMap(8, 8, 0.0)), key_pool=(1, 2, 2))
    assert geometry.key_size == (4, 3, 4)
    keys = torch.zeros(4, 3, 4)
    keys[2, 1, 3] = 1.0
    heat = geometry.to_input(keys, (8, 56, 64))
    hit = heat.nonzero()
    extent = geometry.key_extent((2, 1, 3), (8, 56, 64))
    assert extent["t_range"] == [4, 5] and extent["y_range"] == [12, 27] and extent["x_range"] == [44, 63]
    assert hit[:, 0].unique().tolist() == [4, 5]
    assert (hit[:, 1].min().item(), hit[:, 1].max().item()) == (12, 27)
    assert (hit[:, 2].min().item(), hit[:, 2].max().item()) == (44, 63)
    assert heat.sum() == 2 * 16 * 20
    # feature row 6 is in no key window (floor pooling): its pixels are attended by no key
    assert geometry.input_to_key((8, 56, 64))[1][52:].tolist() == [-1] * 4


def test_time_groups_keys_map_to_their_frames():
    geometry = BlockGeometry((AxisMap(6, 1, 0.0), AxisMap(2, 1, 0.0), AxisMap(2, 1, 0.0)), key_pool=(2, 1, 1),
                             groups=2)
    frames = geometry.input_to_key((6, 2, 2))[0].tolist()
    assert frames == [0, 0, -1, 1, 1, -1]
