"""MMAction2 ``ResNet3d`` recognisers (I3D, I3D-NL): checkpoints with ``state_dict`` (+ mmengine ``meta``).

``backbone.conv1.{conv,bn}`` -> ``stem``; ``backbone.layer{l}.{b}.conv{1,2,3}.{conv,bn}`` ->
``s{l+1}.block{b}.{conv,bn}_{a,b,c}``; ``downsample.{conv,bn}`` -> ``shortcut``;
``backbone.layer{l}.{b}.non_local_block.{theta,phi[.0],g[.0],conv_out}`` -> ``s{l+1}.nl{b}`` (mmcv's
``NonLocal3d`` runs inside block b after its ReLU, which is where video_nl's ``nl{b}`` runs);
``cls_head.fc_cls`` -> ``head.fc``. mmcv's output conv has no bias (a BN follows): video_nl's is set to 0.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .common import NL_PARTS, SourceFormat, per_key, read_torch_state

_STEM = re.compile(r"^backbone\.conv1\.(?P<module>conv|bn)\.(?P<param>\w+)$")
_RES = re.compile(r"^backbone\.layer(?P<layer>[1-4])\.(?P<index>\d+)\."
                  r"(?P<part>conv[123]|downsample)\.(?P<module>conv|bn)\.(?P<param>\w+)$")
_NL = re.compile(r"^backbone\.layer(?P<layer>[1-4])\.(?P<index>\d+)\.non_local_block\."
                 r"(?:(?P<part>theta|phi|g)(?:\.0)?\.conv|conv_out\.(?P<out>conv|bn))\.(?P<param>\w+)$")
_HEAD = re.compile(r"^cls_head\.fc_cls\.(?P<param>weight|bias)$")


def rename_key(key: str) -> str | None:
    """The video_nl key of one MMAction2 key (None when it has no counterpart)."""
    if m := _STEM.match(key):
        return f"stem.{m['module']}.{m['param']}"
    if m := _RES.match(key):
        block = f"s{int(m['layer']) + 1}.block{m['index']}"
        if m["part"] == "downsample":
            return f"{block}.shortcut.{m['module']}.{m['param']}"
        return f"{block}.{m['module']}_{'abc'[int(m['part'][-1]) - 1]}.{m['param']}"
    if m := _NL.match(key):
        role = m["part"] or ("out" if m["out"] == "conv" else "bn")
        return f"s{int(m['layer']) + 1}.nl{m['index']}.{NL_PARTS[role]}.{m['param']}"
    if m := _HEAD.match(key):
        return f"head.fc.{m['param']}"
    return None


def _zero_out_biases(source: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
                     ) -> dict[str, torch.Tensor]:
    """A zero bias for every non-local output conv that has none in the source (mmcv puts a BN after it)."""
    out = {}
    for key in source:
        if key.endswith("non_local_block.conv_out.conv.weight") and key[:-len("weight")] + "bias" not in source:
            bias = rename_key(key)[:-len("weight")] + "bias"
            if bias in state:
                out[bias] = torch.zeros_like(state[bias])
    return out


FORMAT = SourceFormat(
    name="mmaction2",
    input_convention="rgb_imagenet",
    read=read_torch_state,
    rename=per_key(rename_key),
    synthesise=_zero_out_biases,
    notes=("MMAction2's 32x2 I3D uses temporal stride 2 in conv1 and pool1 (RESNET.STEM paper is the closest "
           "video_nl stem).",
           "mmcv's NonLocal3d max-pools keys/values after the phi/g convs and MMAction2 configs use no softmax "
           "scaling (use_scale=False): imported non-local blocks are close to, not identical with, the source; "
           "fine-tune, or set NONLOCAL.USE_SCALE to match the source config."),
)
