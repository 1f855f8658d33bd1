"""ImageNet ResNets in torchvision's layout (``resnet18/34/50/101().state_dict()``), inflated to C2D/I3D.

``conv1``/``bn1`` -> ``stem``; ``layer{1..4}.{i}`` -> ``s{2..5}.block{i}`` with ``conv{1,2,3}``/``bn{1,2,3}`` ->
``conv_{a,b,c}``/``bn_{a,b,c}`` and ``downsample.{0,1}`` -> ``shortcut.{conv,bn}``. Every 2D kernel is repeated
over the target kernel's time extent and divided by it; BatchNorms are copied. The 1000-way ``fc`` is skipped
and the classifier and context blocks keep their initialisation (new layers of the video network).
"""
from __future__ import annotations

import re

from .common import SourceFormat, per_key, read_torch_state, split_model_key

_STEM = {"conv1": "stem.conv", "bn1": "stem.bn"}
_PART = {"conv1": "conv_a", "bn1": "bn_a", "conv2": "conv_b", "bn2": "bn_b", "conv3": "conv_c", "bn3": "bn_c",
         "downsample.0": "shortcut.conv", "downsample.1": "shortcut.bn"}
_BLOCK = re.compile(r"^layer(?P<layer>[1-4])\.(?P<index>\d+)\.(?P<part>conv\d|bn\d|downsample\.[01])\.(?P<param>\w+)$")


def rename_key(key: str) -> str | None:
    """The video_nl key of one torchvision ResNet key (None for ``fc`` and anything unknown)."""
    module, _, param = key.rpartition(".")
    if module in _STEM:
        return f"{_STEM[module]}.{param}"
    m = _BLOCK.match(key)
    if m and m["part"] in _PART:
        return f"s{int(m['layer']) + 1}.block{m['index']}.{_PART[m['part']]}.{m['param']}"
    return None


def _left_initialised(key: str) -> bool:
    """The classifier and every context block: the 2D network has neither."""
    parts = split_model_key(key)
    return key.startswith("head.") or (parts is not None and parts[1] != "block")


FORMAT = SourceFormat(
    name="torchvision2d",
    input_convention="rgb_imagenet",
    read=read_torch_state,
    rename=per_key(rename_key),
    bookkeeping=lambda key: key.startswith("fc."),
    left_initialised=_left_initialised,
    inflate=True,
    notes=("The ImageNet classifier (fc) is not loaded: head.fc and any context blocks keep their "
           "initialisation; fine-tune before evaluating.",),
)
