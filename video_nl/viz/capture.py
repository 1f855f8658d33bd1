"""Choosing context blocks by name and capturing their inputs (and outputs) in one forward pass."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import UserError


def select_blocks(model: nn.Module, names: Sequence[str] | None, *, types: Sequence[str] | None = None) -> list:
    """The ``ContextBlockInfo`` of the blocks named (``s4.nl1`` style), or all (of ``types``) when ``names`` is None.

    Raises:
        UserError: the model has no (matching) context block, or a name is unknown (valid names listed).
    """
    blocks = [b for b in model.context_blocks() if types is None or b.type in types]
    if not blocks:
        kinds = f" of type {', '.join(types)}" if types else ""
        raise UserError(f"The model has no context block{kinds}: set NONLOCAL.LOCATION or NONLOCAL.PRESET (and "
                        f"CONTEXT.TYPE) in the config; `video-nl info --cfg FILE` lists a config's blocks.")
    if names is None:
        return blocks
    by_name = {b.name: b for b in blocks}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(f"Unknown context block(s) {', '.join(unknown)}; this model's blocks are: "
                        f"{', '.join(by_name)} (as listed by `video-nl info`).")
    return [by_name[n] for n in dict.fromkeys(names)]


@torch.no_grad()
def run_capturing(model: nn.Module, video: torch.Tensor, blocks: Sequence, *,
                  outputs: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Forward ``video`` (``B×3×T×H×W``) in eval mode; returns (model output ``B×K``, block inputs, block outputs)
    keyed by block name (``B×C×T'×H'×W'`` each; outputs only when ``outputs``)."""
    inputs: dict[str, torch.Tensor] = {}
    results: dict[str, torch.Tensor] = {}
    handles = []
    for block in blocks:
        handles.append(block.module.register_forward_pre_hook(
            lambda _m, args, name=block.name: inputs.__setitem__(name, args[0].detach())))
        if outputs:
            handles.append(block.module.register_forward_hook(
                lambda _m, _a, out, name=block.name: results.__setitem__(name, out.detach())))
    try:
        with torch.compiler.set_stance("force_eager"):  # hooks: eager even for a compiled model (TRAIN.COMPILE)
            logits = model(video)
    finally:
        for h in handles:
            h.remove()
    return logits, inputs, results
