"""Training checkpoints: names, atomic save, pruning, auto-resume and :func:`load_checkpoint`.

Files live in ``OUTPUT_DIR/checkpoints/`` and sort by name in training order:

* ``checkpoint_epoch_00003.pyth`` — written after 3 completed epochs;
* ``checkpoint_epoch_00003_iter_0000040.pyth`` — 3 completed epochs plus 40 iterations of the 4th
  (``TRAIN.CHECKPOINT_PERIOD_ITERS``); it sorts after ``..._00003.pyth`` and before ``..._00004.pyth``.

Each holds ``model_state``, ``optimizer_state``, ``scheduler_state``, ``scaler_state``, ``epoch`` (completed
epochs), ``iteration`` (iterations done in the epoch in progress), ``global_iteration``, ``cfg``, ``meta`` and
``rng_state`` (one entry per rank: python, numpy and torch CPU/CUDA generator states).
"""
from __future__ import annotations

import glob
import os
import random
import re
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..models.weights.common import unwrap_state_dict
from ..utils.io import atomic_torch_save, safe_torch_load

_NAME = re.compile(r"^checkpoint_epoch_(\d{5})(?:_iter_(\d{7}))?\.pyth$")


def checkpoint_dir(output_dir: str) -> str:
    """``OUTPUT_DIR/checkpoints``."""
    return os.path.join(output_dir, "checkpoints")


def checkpoint_name(*, epoch: int, iteration: int = 0) -> str:
    """File name for ``epoch`` completed epochs plus ``iteration`` iterations of the next one."""
    return f"checkpoint_epoch_{epoch:05d}.pyth" if iteration == 0 else \
        f"checkpoint_epoch_{epoch:05d}_iter_{iteration:07d}.pyth"


def list_checkpoints(output_dir: str) -> list[str]:
    """Checkpoint paths in ``OUTPUT_DIR/checkpoints``, oldest first."""
    found = []
    for path in glob.glob(os.path.join(checkpoint_dir(output_dir), "checkpoint_epoch_*.pyth")):
        m = _NAME.match(os.path.basename(path))
        if m:
            found.append(((int(m.group(1)), int(m.group(2) or 0)), path))
    return [p for _, p in sorted(found)]


def remove_stale_temporaries(output_dir: str) -> None:
    """Delete temporary files a killed save left behind (``.checkpoint_*.tmp``)."""
    for path in glob.glob(os.path.join(checkpoint_dir(output_dir), ".checkpoint_epoch_*.tmp")):
        os.remove(path)


def prune_checkpoints(output_dir: str, *, keep: int) -> None:
    """Keep only the ``keep`` newest checkpoints (0 = keep all)."""
    if keep > 0:
        for path in list_checkpoints(output_dir)[:-keep]:
            os.remove(path)


def capture_rng_state() -> dict:
    """This process's python, numpy and torch (CPU and CUDA) RNG states as loadable tensors/lists."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    scaler: Any, epoch: int, iteration: int, global_iteration: int, cfg: Any,
                    rng_states: list[dict], meta: dict) -> None:
    """Write one training checkpoint atomically (readers see the old file or the new one, never a torn one)."""
    atomic_torch_save({
        "model_state": unwrap(model).state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict(),
        "scaler_state": scaler.state_dict() if scaler is not None else {},
        "epoch": epoch,
        "iteration": iteration,
        "global_iteration": global_iteration,
        "cfg": cfg.to_dict(),
        "meta": meta,
        "rng_state": rng_states,
    }, path)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel and/or ``torch.compile`` (``_orig_mod``) wrapper, or the model
    itself: its ``state_dict()`` keys carry neither ``module.`` nor ``_orig_mod.`` prefixes."""
    model = getattr(model, "_orig_mod", model)
    model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return getattr(model, "_orig_mod", model)


def newest_readable_checkpoint(output_dir: str) -> tuple[str, dict] | None:
    """The newest checkpoint that loads, with its contents; unreadable ones are skipped with a warning."""
    for path in reversed(list_checkpoints(output_dir)):
        try:
            state = safe_torch_load(path)
        except UserError as e:
            warnings.warn(f"Skipping unreadable checkpoint {path}: {e}", stacklevel=2)
            continue
        if isinstance(state, dict) and "model_state" in state and "optimizer_state" in state:
            return path, state
        warnings.warn(f"Skipping {path}: not a training checkpoint (no model_state/optimizer_state).", stacklevel=2)
    return None


def load_checkpoint(model: nn.Module, path: str, *, strict: bool = True) -> dict:
    """Load weights from ``path`` into ``model`` and return the file's contents (a dict).

    Accepts training checkpoints, ``video-nl convert`` outputs (``model_state``/``cfg``/``meta``) and raw
    state dicts (also under ``state_dict``); a ``module.`` prefix (DDP) is stripped. Reads with ``safe_torch_load``.

    Raises:
        UserError: unreadable file, or (``strict``) missing/unexpected keys or shape mismatches, listed.
    """
    obj = safe_torch_load(path)
    state = unwrap_state_dict(obj, path=path)
    target = unwrap(model)
    own = target.state_dict()
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if mismatched or (strict and (missing or unexpected)):
        raise UserError(f"Checkpoint {path} does not match the model built from the config: "
                        f"{len(missing)} missing keys {missing[:8]}, {len(unexpected)} unexpected keys "
                        f"{unexpected[:8]}, shape mismatches {mismatched[:8]}. Check MODEL.ARCH, RESNET.DEPTH, "
                        f"NONLOCAL.LOCATION and MODEL.NUM_CLASSES against the checkpoint's cfg.")
    target.load_state_dict(state, strict=strict)
    return obj if isinstance(obj, dict) and "model_state" in obj else {"model_state": state}
