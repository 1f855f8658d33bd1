"""Fold every eval-mode BatchNorm into the convolution that feeds it: ``BN(conv(x)) = conv'(x)``.

With running statistics μ, σ² and affine γ, β: ``W' = W·γ/√(σ²+ε)`` (per output channel) and
``b' = (b − μ)·γ/√(σ²+ε) + β`` (a bias is added to bias-free convs). This is exact in real arithmetic for any
γ — including the zero-initialised γ of each residual block's last BN and of the non-local block's output BN
(``W' = 0, b' = β``) — and leaves fp32 round-off differences only.

Which BN follows which conv is declared per module type in :data:`FOLD_PAIRS` (attribute names, as in the
state-dict layout), plus any ``Conv3d, BatchNorm3d`` neighbours inside an ``nn.Sequential`` (projection
shortcuts, LatentGNN's reductions). A BN is only folded when its conv's output goes nowhere else, which holds
for every pair listed: the non-local block's ``bn`` normalises ``conv_out``'s output before the residual sum,
LatentGNN's ``bn_out`` normalises ``conv_out`` before the γ scale.
"""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..models.context import LatentGNNBlock, NonLocalBlock
from ..models.resnet import BasicBlock, Bottleneck
from ..models.stem import VideoStem

#: module type -> (conv attribute, BN attribute) pairs where the BN directly normalises that conv's output.
FOLD_PAIRS: dict[type, tuple[tuple[str, str], ...]] = {
    VideoStem: (("conv", "bn"),),
    Bottleneck: (("conv_a", "bn_a"), ("conv_b", "bn_b"), ("conv_c", "bn_c")),
    BasicBlock: (("conv_a", "bn_a"), ("conv_b", "bn_b")),
    NonLocalBlock: (("conv_out", "bn"),),
    LatentGNNBlock: (("conv_out", "bn_out"),),
}

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _foldable(conv: object, bn: object) -> bool:
    return isinstance(conv, _CONVS) and isinstance(bn, _NORMS) and bn.track_running_stats \
        and bn.running_mean is not None


def _fold_module(module: nn.Module) -> int:
    """Fold the pairs owned directly by ``module``; returns how many BNs were folded."""
    folded = 0
    for conv_name, bn_name in FOLD_PAIRS.get(type(module), ()):
        conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
        if _foldable(conv, bn):
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())
            folded += 1
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if _foldable(conv, bn):
                module._modules[first] = fuse_conv_bn_eval(conv, bn)
                module._modules[second] = nn.Identity()
                folded += 1
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BN of :data:`FOLD_PAIRS` (and Sequential conv→BN) folded.

    The input model is left untouched. BNs that are not in a known pair stay (see :func:`remaining_batchnorms`).
    """
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        _fold_module(module)
    return folded


def remaining_batchnorms(model: nn.Module) -> list[str]:
    """Names of the BatchNorm modules still in ``model`` (empty after folding any video_nl model)."""
    return [name for name, m in model.named_modules() if isinstance(m, _NORMS)]
