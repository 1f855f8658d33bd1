"""Tiny models that behave like trained ones, for tests of what is done with a trained model (export, features).

A freshly built video_nl model is partly an identity: every context block and every residual block's last BN
start at zero. :func:`trained_like_` gives such parameters small random values and gives every BN random
running statistics and affine parameters, so that folding, exporting and feature hooks see real numbers.
"""
from __future__ import annotations

import torch
from torch import nn

from video_nl.config import load_config

#: tiny configs for every block type the exporters must handle (4 frames, 32-64 px, ResNet-18 at width 4)
TINY = ["MODEL.NUM_CLASSES", "5", "MODEL.ARCH", "i3d", "RESNET.DEPTH", "18", "RESNET.WIDTH_PER_GROUP", "4",
        "NONLOCAL.LOCATION", "[[],[1],[],[]]", "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "64",
        "DATA.TEST_CROP_SIZE", "64", "LATENTGNN.NUM_NODES", "4", "LATENTGNN.CHANNEL_STRIDE", "2"]
VARIANTS: dict[str, list[str]] = {
    "c2d": ["MODEL.ARCH", "c2d", "NONLOCAL.LOCATION", "[[],[],[],[]]"],
    "i3d": ["NONLOCAL.LOCATION", "[[],[],[],[]]"],
    "nl_softmax": [],
    "nl_gaussian": ["NONLOCAL.INSTANTIATION", "gaussian"],
    "nl_dot_product": ["NONLOCAL.INSTANTIATION", "dot_product"],
    "nl_concatenation": ["NONLOCAL.INSTANTIATION", "concatenation"],
    "gc": ["CONTEXT.TYPE", "gc"],
    "snl": ["CONTEXT.TYPE", "snl"],
    "se": ["CONTEXT.TYPE", "se"],
    "latentgnn": ["CONTEXT.TYPE", "latentgnn"],
}


def tiny_cfg(variant: str, *extra: str):
    """The config of one of :data:`VARIANTS` (plus ``extra`` KEY VALUE overrides)."""
    return load_config(None, [*TINY, *VARIANTS[variant], *extra])


@torch.no_grad()
def trained_like_(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """Randomise ``model`` in place like a trained network: BN statistics and affine parameters, and small
    values for every all-zero parameter (zero-initialised gammas, context-block output layers)."""
    g = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=g) * (high - low) + low)

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            uniform(module.running_mean, -0.2, 0.2)
            uniform(module.running_var, 0.5, 1.5)
            uniform(module.weight, 0.5, 1.0)
            uniform(module.bias, -0.1, 0.1)
    for p in model.parameters():
        if not p.abs().max() > 0:
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()
