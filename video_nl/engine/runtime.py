"""Run-time helpers every engine entry point shares (train, test, predict, feature extraction, ...).

:func:`setup` (process group, seeds, determinism), :func:`autocast` (``TRAIN.MIXED_PRECISION``),
:func:`build_model_for` (device, channels-last, SyncBN, DDP), :func:`load_model` (eval model from a
checkpoint) and :func:`iterate` (a DataLoader pass that leaves the global torch RNG alone).
"""
from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from . import checkpoint as ckpt
from . import distributed as du


def setup(cfg: Any) -> du.DistInfo:
    """Process group, seeds (``RNG_SEED`` + rank) and deterministic algorithms when asked."""
    info = du.init_distributed(cfg)
    if cfg.TRAIN.MIXED_PRECISION == "fp16" and info.device.type != "cuda":
        raise UserError("TRAIN.MIXED_PRECISION fp16 needs a CUDA GPU (GradScaler); on CPU use bf16 or none.")
    torch.manual_seed(cfg.RNG_SEED + info.rank)
    random.seed(cfg.RNG_SEED + info.rank)
    np.random.seed(cfg.RNG_SEED + info.rank)
    if cfg.TRAIN.DETERMINISTIC:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=info.device.type == "cuda")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return info


def autocast(cfg: Any, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of ``TRAIN.MIXED_PRECISION`` (a no-op for ``none``)."""
    mode = cfg.TRAIN.MIXED_PRECISION
    if mode == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if mode == "bf16" else torch.float16)


def build_model_for(cfg: Any, info: du.DistInfo, *, distributed_wrap: bool) -> nn.Module:
    """``build_model(cfg)`` on the device, SyncBN/channels-last as configured, DDP-wrapped when asked."""
    from ..models.build import build_model

    model = build_model(cfg).to(info.device)
    if cfg.TRAIN.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last_3d)
    if info.distributed and distributed_wrap:
        if cfg.BN.NORM_TYPE == "sync_batchnorm":
            if info.device.type != "cuda":
                raise UserError("BN.NORM_TYPE sync_batchnorm needs CUDA devices (PyTorch's SyncBatchNorm is "
                                "GPU-only); use batchnorm on CPU.")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [info.device.index] if info.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def load_model(cfg: Any, info: du.DistInfo, path: str) -> nn.Module:
    """The config's model with the weights of ``path``, in eval mode on this rank's device."""
    model = build_model_for(cfg, info, distributed_wrap=False)
    ckpt.load_checkpoint(model, path)
    return model.eval()


def iterate(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    """Iterate ``loader`` without the draw DataLoader makes from the global torch RNG when it starts
    (items are seeded from (RNG_SEED, epoch, index), so the global stream — dropout — stays resumable)."""
    state = torch.get_rng_state()
    it = iter(loader)
    torch.set_rng_state(state)
    yield from it
