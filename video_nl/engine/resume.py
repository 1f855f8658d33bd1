"""Start-of-run weights and checkpoints of a training run: initial weights, auto-resume, saving.

:func:`resume_or_init` continues from the newest readable checkpoint in ``OUTPUT_DIR/checkpoints``
(``TRAIN.AUTO_RESUME``) or loads ``TRAIN.CHECKPOINT_FILE_PATH``; :func:`save` writes a checkpoint atomically on
rank 0 and prunes old ones. File naming and the atomic write live in :mod:`video_nl.engine.checkpoint`.
"""
from __future__ import annotations

import os
from typing import Any

from torch import nn

from .. import __version__
from ..utils.io import safe_torch_load
from . import checkpoint as ckpt
from . import distributed as du
from .logging import StatsLogger
from .state import Run


def init_weights(cfg: Any, model: nn.Module, stats: StatsLogger) -> None:
    """Initialise from ``TRAIN.CHECKPOINT_FILE_PATH``: 2D weights inflated, or any video_nl checkpoint.

    Tensors whose shape differs (a classifier for another class count) keep their initialisation.
    """
    path = cfg.TRAIN.CHECKPOINT_FILE_PATH
    target = ckpt.unwrap(model)
    own = target.state_dict()
    if cfg.TRAIN.CHECKPOINT_INFLATE:
        from ..models.weights.common import read_torch_state
        from ..models.weights.inflate import inflate_state_dict

        state = inflate_state_dict(read_torch_state(path), target)
    else:
        from ..models.weights.common import unwrap_state_dict

        state = unwrap_state_dict(safe_torch_load(path), path=path)
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(kept))
    target.load_state_dict(kept, strict=False)
    stats.info(f"initialised {len(kept)} tensors from {path}" + (f"; kept the initialisation of {skipped}"
                                                                  if skipped else ""))


def resume_or_init(run: Run) -> None:
    """Continue from the newest readable checkpoint (``TRAIN.AUTO_RESUME``), else load initial weights."""
    cfg = run.cfg
    if run.dist.is_main:
        ckpt.remove_stale_temporaries(cfg.OUTPUT_DIR)
    found = ckpt.newest_readable_checkpoint(cfg.OUTPUT_DIR) if cfg.TRAIN.AUTO_RESUME else None
    if found is None:
        if cfg.TRAIN.CHECKPOINT_FILE_PATH:
            init_weights(cfg, run.model, run.stats)
        return
    path, state = found
    ckpt.unwrap(run.model).load_state_dict(state["model_state"])
    run.optimizer.load_state_dict(state["optimizer_state"])
    run.scheduler.load_state_dict(state["scheduler_state"])
    if run.scaler is not None and state.get("scaler_state"):
        run.scaler.load_state_dict(state["scaler_state"])
    run.epoch, run.iteration = int(state["epoch"]), int(state["iteration"])
    run.global_iteration = int(state["global_iteration"])
    rng = state.get("rng_state") or []
    if len(rng) == run.dist.world_size:
        ckpt.restore_rng_state(rng[run.dist.rank])
    else:
        run.stats.info(f"checkpoint has RNG states for {len(rng)} ranks, this run has {run.dist.world_size}: "
                       f"continuing with fresh RNG states (not bitwise-repeatable)")
    run.last_checkpoint = path
    run.stats.info(f"resumed from {path} (epoch {run.epoch}, iteration {run.iteration})")


# ---------------------------------------------------------------------------------------------- checkpoints
def save(run: Run, *, iteration: int) -> str:
    """Write ``OUTPUT_DIR/checkpoints/checkpoint_epoch_NNNNN[_iter_NNNNNNN].pyth`` (rank 0), prune old ones."""
    rng_states = du.all_gather_objects(ckpt.capture_rng_state())
    path = os.path.join(ckpt.checkpoint_dir(run.cfg.OUTPUT_DIR), ckpt.checkpoint_name(epoch=run.epoch,
                                                                                        iteration=iteration))
    if run.dist.is_main:
        meta = {"source": "video_nl", "input_convention": run.cfg.MODEL.INPUT_CONVENTION,
                "nl_instantiation": run.cfg.NONLOCAL.INSTANTIATION, "video_nl_version": __version__}
        ckpt.save_checkpoint(path, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler,
                             scaler=run.scaler, epoch=run.epoch, iteration=iteration,
                             global_iteration=run.global_iteration, cfg=run.cfg, rng_states=rng_states, meta=meta)
        ckpt.prune_checkpoints(run.cfg.OUTPUT_DIR, keep=run.cfg.TRAIN.KEEP_CHECKPOINTS)
    du.barrier()
    run.last_checkpoint = path
    return path
