"""PySlowFast C2D/I3D/Slow checkpoints (``.pyth`` with ``model_state``), single pathway, with non-local blocks.

``s1.pathway0_stem.{conv,bn}`` -> ``stem``; ``s{n}.pathway0_res{i}.branch2.{a,b,c}[_bn]`` ->
``s{n}.block{i}.{conv,bn}_{a,b,c}``; ``branch1[_bn]`` -> ``shortcut.{conv,bn}``;
``s{n}.pathway0_nonlocal{i}.{conv_theta,conv_phi,conv_g,conv_out,bn}`` -> ``s{n}.nl{i}`` (PySlowFast numbers a
non-local block by the residual block it follows, as video_nl does); ``head.projection`` -> ``head.fc``.
Fast-pathway (``pathway1``) and fusion keys are SlowFast-network weights and stay unmapped.
"""
from __future__ import annotations

import re

from .common import NL_PARTS, SourceFormat, per_key, read_torch_state

_STEM = re.compile(r"^s1\.pathway0_stem\.(?P<module>conv|bn)\.(?P<param>\w+)$")
_RES = re.compile(r"^s(?P<stage>[2-5])\.pathway0_res(?P<index>\d+)\."
                  r"(?P<part>branch1|branch1_bn|branch2\.[abc]|branch2\.[abc]_bn)\.(?P<param>\w+)$")
_NL = re.compile(r"^s(?P<stage>[2-5])\.pathway0_nonlocal(?P<index>\d+)\."
                 r"(?P<part>conv_theta|conv_phi|conv_g|conv_out|bn)\.(?P<param>\w+)$")
_HEAD = re.compile(r"^head\.projection\.(?P<param>weight|bias)$")


def _res_part(part: str) -> str:
    if part.startswith("branch1"):
        return "shortcut.bn" if part.endswith("_bn") else "shortcut.conv"
    letter = part[len("branch2.")]
    return f"bn_{letter}" if part.endswith("_bn") else f"conv_{letter}"


def rename_key(key: str) -> str | None:
    """The video_nl key of one PySlowFast key (None when it has no counterpart)."""
    if m := _STEM.match(key):
        return f"stem.{m['module']}.{m['param']}"
    if m := _RES.match(key):
        return f"s{m['stage']}.block{m['index']}.{_res_part(m['part'])}.{m['param']}"
    if m := _NL.match(key):
        return f"s{m['stage']}.nl{m['index']}.{NL_PARTS[m['part'].removeprefix('conv_')]}.{m['param']}"
    if m := _HEAD.match(key):
        return f"head.fc.{m['param']}"
    return None


FORMAT = SourceFormat(
    name="slowfast",
    input_convention="rgb_0.45_0.225",
    read=read_torch_state,
    rename=per_key(rename_key),
)
