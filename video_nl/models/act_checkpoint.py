"""Activation checkpointing of residual/context blocks that keeps BatchNorm's running statistics exact.

:func:`checkpoint_block` runs a block under ``torch.utils.checkpoint`` (non-reentrant): only the block's input
is kept for backward, and the block's forward runs a second time during backward to rebuild its activations.
That second forward would update every training-mode BN's ``running_mean``/``running_var`` and
``num_batches_tracked`` again (each step would count twice). So the recomputation runs the very same ops
(it normalises with the same batch statistics, and ``torch.utils.checkpoint`` checks that it saves the same
tensors) and then puts the block's BN buffers back to their values from before it. Autocast state and the RNG are restored for the recomputation by
``torch.utils.checkpoint`` itself (so AMP and dropout see what the first forward saw); non-reentrant
checkpointing works under DDP (also with ``no_sync``).

Under ``torch.compile`` the checkpoint is traced into the graph and AOTAutograd's partitioner recomputes the
tagged ops inside the compiled backward; buffer updates stay in the forward graph, so no context is needed.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def restored_bn_buffers(module: nn.Module) -> Iterator[None]:
    """Whatever runs inside leaves the running statistics of ``module``'s BN layers as they were on entry."""
    buffers = [b for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(buffers, saved):
                b.copy_(s)


def _contexts(module: nn.Module) -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """(first forward, recomputation) contexts for ``torch.utils.checkpoint``'s ``context_fn``."""
    return contextlib.nullcontext(), restored_bn_buffers(module)


def checkpoint_block(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with its activations recomputed in backward instead of stored (``B×C×T×H×W`` in and out)."""
    if torch.compiler.is_compiling():
        return checkpoint(module, x, use_reentrant=False)
    return checkpoint(module, x, use_reentrant=False, context_fn=functools.partial(_contexts, module))
