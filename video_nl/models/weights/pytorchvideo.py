"""PyTorchVideo ResNets (hub ``c2d_r50``, ``i3d_r50``, ``slow_r50``; any ``create_resnet`` model).

Keys are positional: ``blocks.0`` is the stem (``conv``, ``norm``); the blocks holding ``res_blocks`` are the
residual stages in order (c2d/i3d put a parameter-free pool at ``blocks.2``, so their stages are blocks 1, 3, 4, 5
and slow's are 1..4); each ``res_blocks.{i}`` has ``branch1_conv``/``branch1_norm`` (shortcut) and
``branch2.{conv,norm}_{a,b,c}``; the head's linear layer is ``blocks.{last}.proj``. The stage indices are read
from the file, not assumed.
"""
from __future__ import annotations

import re

from .common import SourceFormat, read_torch_state

_STEM = re.compile(r"^blocks\.0\.(?P<module>conv|norm)\.(?P<param>\w+)$")
_RES = re.compile(r"^blocks\.(?P<block>\d+)\.res_blocks\.(?P<index>\d+)\."
                  r"(?P<part>branch1_conv|branch1_norm|branch2\.(?:conv|norm)_[abc])\.(?P<param>\w+)$")
_HEAD = re.compile(r"^blocks\.\d+\.proj\.(?P<param>weight|bias)$")
_PART = {"branch1_conv": "shortcut.conv", "branch1_norm": "shortcut.bn"}


def _part(name: str) -> str:
    if name in _PART:
        return _PART[name]
    kind, letter = name.removeprefix("branch2.").split("_")
    return f"{'conv' if kind == 'conv' else 'bn'}_{letter}"


def rename(keys: list[str]) -> dict[str, str]:
    """{pytorchvideo key: video_nl key} for every key of a PyTorchVideo ResNet."""
    stage_blocks = sorted({int(m["block"]) for k in keys if (m := _RES.match(k))})
    stage_of = {block: stage for stage, block in enumerate(stage_blocks, start=2)}
    out = {}
    for key in keys:
        if m := _STEM.match(key):
            out[key] = f"stem.{'conv' if m['module'] == 'conv' else 'bn'}.{m['param']}"
        elif m := _RES.match(key):
            out[key] = f"s{stage_of[int(m['block'])]}.block{m['index']}.{_part(m['part'])}.{m['param']}"
        elif m := _HEAD.match(key):
            out[key] = f"head.fc.{m['param']}"
    return out


FORMAT = SourceFormat(
    name="pytorchvideo",
    input_convention="rgb_0.45_0.225",
    read=read_torch_state,
    rename=rename,
)
