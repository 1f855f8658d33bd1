"""Run-time helpers every engine entry point shares (train, test, predict, feature extraction, ...).

:func:`setup` (process group, seeds, determinism), :func:`autocast` (``TRAIN.MIXED_PRECISION``),
:func:`build_model_for` (device, channels-last, SyncBN, ``TRAIN.COMPILE``, DDP), :func:`compile_model`,
:func:`compile_stats`, :func:`load_model` (eval model from a checkpoint) and :func:`iterate` (a DataLoader pass
that leaves the global torch RNG alone).
"""
from __future__ import annotations

import contextlib
import os
import random
import sys
import warnings
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


# ---------------------------------------------------------------------------------------------- torch.compile
_warned: set[str] = set()


def compile_unavailable(device: torch.device) -> str | None:
    """Why ``torch.compile`` (inductor) cannot run on ``device`` in this process, or None when it can.

    Checked up front because compilation is lazy (it would fail at the first forward, mid-run): TorchDynamo
    support for this platform/Python, a working C++ compiler for CPU kernels (inductor's ``cpp.cxx``, i.e.
    ``$CXX`` or g++), Triton for CUDA kernels.
    """
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return f"TorchDynamo does not support this platform (Python {sys.version.split()[0]})"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "inductor needs Triton for CUDA kernels and it is not installed or " \
                                         "does not support this GPU"
    from torch._inductor import config as inductor_config
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()  # runs `$CXX --version` for each candidate, as inductor will
    except Exception:  # noqa: BLE001 - inductor raises its own InvalidCxxCompiler (or OSError) when none runs
        wanted = [c for c in inductor_config.cpp.cxx if c]
        return (f"inductor needs a C++ compiler for CPU kernels and none of {wanted} runs (install g++ or point "
                f"$CXX at one)")
    return None


def compile_model(cfg: Any, model: nn.Module, *, device: torch.device) -> nn.Module:
    """``model`` compiled in place with ``torch.compile`` as ``TRAIN.COMPILE`` says (returned for chaining).

    The module object, its class, methods and ``state_dict()`` keys stay as they are (``nn.Module.compile``:
    no ``_orig_mod.`` wrapper), so checkpoints move freely between compiled and eager runs. Shapes are
    static (``dynamic=False``): every distinct input shape (train crop, val crop and its last partial batch,
    the fully-convolutional test crop) compiles once and is cached; eval view chunks are padded to one size
    (``evaluate.view_probs``) so the test pass compiles once per crop size. Recompiles are counted by
    :func:`compile_stats` (json_stats ``compile`` records). Where compilation is unavailable
    (:func:`compile_unavailable`) the model stays eager and one warning per process says why. Calling
    it again on a compiled model does nothing.
    """
    mode = cfg.TRAIN.COMPILE
    if mode == "none" or is_compiled(model):
        return model
    reason = compile_unavailable(device)
    if reason is not None:
        if reason not in _warned:
            _warned.add(reason)
            warnings.warn(f"TRAIN.COMPILE {mode}: running the model eagerly (not compiled) because {reason}.",
                          RuntimeWarning, stacklevel=2)
        return model
    model.compile(mode=None if mode == "default" else mode, dynamic=False)
    return model


def is_compiled(model: nn.Module) -> bool:
    """True when ``model`` (or the module inside its DDP wrapper) is compiled: in place (:func:`compile_model`)
    or wrapped by ``torch.compile``."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return any(getattr(m, "_compiled_call_impl", None) is not None or hasattr(m, "_orig_mod") for m in (model, inner))


def compile_stats() -> dict[str, Any]:
    """This process's TorchDynamo totals: graphs compiled, recompiles (with their last reasons), graph breaks."""
    from torch._dynamo.utils import counters, get_compilation_metrics

    reasons = [m.recompile_reason for m in get_compilation_metrics() if m.recompile_reason]
    return {"compiled_graphs": int(counters["stats"]["unique_graphs"]), "recompiles": len(reasons),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "recompile_reasons": [r.splitlines()[0][:200] for r in reasons[-5:]]}


def log_compile_stats(cfg: Any, stats: Any, model: nn.Module, *, step: int) -> None:
    """A json_stats ``compile`` record when ``TRAIN.COMPILE`` is on: ``mode``, ``compiled`` (False after the
    fallback) and :func:`compile_stats`."""
    if cfg.TRAIN.COMPILE != "none":
        stats.log("compile", {"mode": cfg.TRAIN.COMPILE, "compiled": is_compiled(model), **compile_stats()},
                  step=step)


# ---------------------------------------------------------------------------------------------- models
def build_model_for(cfg: Any, info: du.DistInfo, *, distributed_wrap: bool) -> nn.Module:
    """``build_model(cfg)`` on the device, SyncBN/channels-last as configured, compiled (``TRAIN.COMPILE``,
    :func:`compile_model`), DDP-wrapped when asked (DDP wraps the compiled module)."""
    from ..models.build import build_model

    model = build_model(cfg).to(info.device)
    if cfg.TRAIN.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last_3d)
    wrap = info.distributed and distributed_wrap
    if wrap and cfg.BN.NORM_TYPE == "sync_batchnorm":
        if info.device.type != "cuda":
            raise UserError("BN.NORM_TYPE sync_batchnorm needs CUDA devices (PyTorch's SyncBatchNorm is "
                            "GPU-only); use batchnorm on CPU.")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    compile_model(cfg, model, device=info.device)
    if wrap:
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
