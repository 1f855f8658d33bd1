"""Context blocks (non-local, GC, SNL, SE, LatentGNN): residual B×C×T×H×W -> B×C×T×H×W, identity at init.

``build_context_block(cfg, kind=..., dim=..., stage=...)`` builds one from the config; the classes take
keyword-only arguments and can be built without a config. See docs/internals.md for the attention API.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ...errors import UserError
from .gc import GCBlock
from .latentgnn import LatentGNNBlock
from .nonlocal_block import NonLocalBlock
from .se import SEBlock
from .snl import SimplifiedNonLocalBlock

__all__ = ["CONTEXT_PREFIX", "GCBlock", "LatentGNNBlock", "NonLocalBlock", "SEBlock", "SimplifiedNonLocalBlock",
           "build_context_block"]

CONTEXT_PREFIX = {"nonlocal": "nl", "gc": "gc", "snl": "snl", "se": "se", "latentgnn": "lgnn"}
STAGES = (2, 3, 4, 5)


def _per_stage(values: list, stage: int, key: str) -> Any:
    if len(values) != len(STAGES):
        raise UserError(f"{key} must have one entry per stage res2..res5 (4 entries); got {len(values)}: {values}.")
    return values[stage - STAGES[0]]


def build_context_block(cfg, *, kind: str, dim: int, stage: int) -> nn.Module:
    """The ``kind`` context block for a ``dim``-channel map of res``stage`` (2..5), configured from ``cfg``."""
    if kind not in CONTEXT_PREFIX:
        raise UserError(f"Unknown context block {kind!r}; CONTEXT.TYPE must be one of {', '.join(CONTEXT_PREFIX)}.")
    if stage not in STAGES:
        raise UserError(f"Context blocks go in stages res2..res5 (stage 2..5); got stage {stage}.")
    bn = {"bn_eps": cfg.BN.EPS, "bn_momentum": cfg.BN.MOMENTUM}
    if kind == "nonlocal":
        nl = cfg.NONLOCAL
        return NonLocalBlock(dim=dim, inner_dim=max(1, int(dim * nl.INNER_RATIO)), instantiation=nl.INSTANTIATION,
                             key_pool=tuple(_per_stage(nl.POOL, stage, "NONLOCAL.POOL")), use_scale=nl.USE_SCALE,
                             mode=nl.MODE, groups=_per_stage(nl.GROUP, stage, "NONLOCAL.GROUP"), use_bn=nl.USE_BN,
                             fast_path=nl.FAST_PATH, **bn)
    if kind == "gc":
        return GCBlock(dim=dim, ratio=cfg.GC.RATIO, pool=cfg.GC.POOL, fusion=tuple(cfg.GC.FUSION))
    if kind == "snl":
        return SimplifiedNonLocalBlock(dim=dim)
    if kind == "se":
        return SEBlock(dim=dim, ratio=cfg.SE.RATIO)
    lg = cfg.LATENTGNN
    return LatentGNNBlock(dim=dim, num_nodes=lg.NUM_NODES, num_kernels=lg.NUM_KERNELS,
                          channel_stride=lg.CHANNEL_STRIDE, symmetric=lg.SYMMETRIC, graph_conv=lg.GRAPH_CONV, **bn)
