"""Inflation of 2D weights to a 3D model, for ``TRAIN.CHECKPOINT_INFLATE``.

The 2D state may be in torchvision's ResNet layout (``conv1``, ``layer1.0.conv1`` ...) or in video_nl's own
layout with 1×k×k kernels (a C2D model inflated to I3D). Each kernel is repeated over the target kernel's time
extent and divided by it (the "mean" inflation of the non-local paper and PySlowFast); BatchNorms and
equal-shape tensors are copied. Context blocks and the classifier keep their initialisation.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

from . import torchvision2d
from .common import SourceFormat, check_complete, import_weights, read_torch_state

logger = logging.getLogger(__name__)

_OWN_LAYOUT = SourceFormat(
    name="video_nl",
    input_convention="rgb_0.45_0.225",
    read=read_torch_state,
    rename=lambda keys: {k: k for k in keys},
    bookkeeping=lambda key: key.startswith("head."),
    left_initialised=torchvision2d.FORMAT.left_initialised,
    inflate=True,
)


def inflate_state_dict(state_2d: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone tensors of ``model``'s state dict, taken (inflated) from ``state_2d``.

    Context blocks and the classifier are not in the result: load it with ``strict=False`` so that they keep
    their initialisation.

    Raises:
        WeightImportError: a shape that cannot be inflated, a backbone key of the model that ``state_2d``
            lacks, or a weight in ``state_2d`` the model has no place for (e.g. R34 weights into an R18).
    """
    torchvision_layout = any(k.startswith(("conv1.", "layer1.")) for k in state_2d)
    fmt = torchvision2d.FORMAT if torchvision_layout else _OWN_LAYOUT
    report = import_weights(fmt, state_2d, model.state_dict())
    check_complete(report, what=f"The 2D weights ({fmt.name} layout) to inflate",
                   hint="Check RESNET.DEPTH against the 2D network of TRAIN.CHECKPOINT_FILE_PATH.")
    logger.info("inflated %d kernels, copied %d tensors from %s-layout 2D weights; left initialised: %s",
                len(report.inflated_keys), len(report.mapped) - len(report.inflated_keys), fmt.name,
                ", ".join(report.left_initialised_keys) or "nothing")
    return {key: report.model_state[key] for key in report.mapped.values()}
