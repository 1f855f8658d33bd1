"""``build_model(cfg)``: a :class:`VideoResNet` from the config, with the arch registry.

``ARCHS`` maps MODEL.ARCH to the temporal design (PySlowFast's temporal kernel bases):

======== ====== ================================================= ===============
arch     conv1  temporal kernels res2 / res3 / res4 / res5 (cyclic) pool after res2
======== ====== ================================================= ===============
c2d      1      1 / 1 / 1 / 1                                     2×1×1
i3d      5      3 / 3,1 / 3,1 / 1,3 on the first 1×1 (3×1×1)      2×1×1
i3d_3x3x3 5     same pattern on the 3×3 conv (3×3×3)              2×1×1
slow     1      1 / 1 / 3 / 3 on the first 1×1                    none
======== ====== ================================================= ===============

Basic blocks (ResNet-18/34) put the temporal kernel on their first 3×3 conv with the same pattern.
"""
from __future__ import annotations

import functools

from torch import nn

from ..config import CfgNode, stage_flags
from .context import CONTEXT_PREFIX, build_context_block
from .placement import resolve_locations
from .resnet import ArchSpec, ContextSpec, VideoResNet

ARCHS: dict[str, ArchSpec] = {
    "c2d": ArchSpec(stem_kernel=1, temporal_basis=((1,), (1,), (1,), (1,))),
    "i3d": ArchSpec(stem_kernel=5, temporal_basis=((3,), (3, 1), (3, 1), (1, 3))),
    "i3d_3x3x3": ArchSpec(stem_kernel=5, temporal_basis=((3,), (3, 1), (3, 1), (1, 3)), inflate_conv_b=True),
    "slow": ArchSpec(stem_kernel=1, temporal_basis=((1,), (1,), (3,), (3,)), temporal_pool=False),
}

STAGE_DEPTHS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3),
}


def _context_spec(cfg: CfgNode, locations: list[list[int]]) -> ContextSpec | None:
    if not any(locations):
        return None
    kind = cfg.CONTEXT.TYPE
    return ContextSpec(type=kind, prefix=CONTEXT_PREFIX[kind], locations=locations,
                       factory=lambda dim, stage: build_context_block(cfg, kind=kind, dim=dim, stage=stage))


def build_model(cfg: CfgNode) -> VideoResNet:
    """The model described by ``cfg`` (MODEL, RESNET, BN, CONTEXT, NONLOCAL and the DATA input size).

    The head's pooling window is the res5 map of a ``DATA.NUM_FRAMES × DATA.TRAIN_CROP_SIZE²`` clip.

    Raises:
        UserError: invalid context-block placement or an input too small for the network.
    """
    depths = STAGE_DEPTHS[cfg.RESNET.DEPTH]
    locations = resolve_locations(preset=cfg.NONLOCAL.PRESET, location=cfg.NONLOCAL.LOCATION, depths=depths,
                                  depth=cfg.RESNET.DEPTH)
    paper = cfg.RESNET.STEM == "paper"
    crop = cfg.DATA.TRAIN_CROP_SIZE
    return VideoResNet(
        depths=depths,
        bottleneck=cfg.RESNET.DEPTH >= 50,
        width=cfg.RESNET.WIDTH_PER_GROUP,
        groups=cfg.RESNET.NUM_GROUPS,
        arch=ARCHS[cfg.MODEL.ARCH],
        stem_temporal_stride=2 if paper else 1,
        stem_pool_padding=cfg.RESNET.STEM_POOL_PADDING,
        temporal_pool=cfg.RESNET.TEMPORAL_POOL,
        context=_context_spec(cfg, locations),
        num_classes=cfg.MODEL.NUM_CLASSES,
        dropout=cfg.MODEL.DROPOUT_RATE,
        head_act=cfg.MODEL.HEAD_ACT,
        input_size=(cfg.DATA.NUM_FRAMES, crop, crop),
        fc_init_std=cfg.MODEL.FC_INIT_STD,
        zero_init_final_bn=cfg.RESNET.ZERO_INIT_FINAL_BN,
        norm=functools.partial(nn.BatchNorm3d, eps=cfg.BN.EPS, momentum=cfg.BN.MOMENTUM),
        act_checkpoint=stage_flags(cfg.MODEL.ACT_CHECKPOINT, key="MODEL.ACT_CHECKPOINT"),
    )
