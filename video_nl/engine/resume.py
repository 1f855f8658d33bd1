"""Start-of-run weights and checkpoints of a training run: initial weights, auto-resume, saving.

:func:`resume_or_init` continues from the newest readable checkpoint in ``OUTPUT_DIR/checkpoints`` as rank 0
sees it, every rank loading that very file (``TRAIN.AUTO_RESUME``), or loads ``TRAIN.CHECKPOINT_FILE_PATH``;
:func:`save` writes a checkpoint atomically on rank 0 and prunes old ones. File naming and the atomic write live
in :mod:`video_nl.engine.checkpoint`.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import UserError
from ..utils.io import safe_torch_load
from . import checkpoint as ckpt
from . import distributed as du
from .logging import StatsLogger
from .state import Run

HEAD_PREFIX = "head."  # the classifier's state-dict prefix (``VideoResNet.head``)


def init_weights(cfg: Any, model: nn.Module, stats: StatsLogger) -> None:
    """Initialise from ``TRAIN.CHECKPOINT_FILE_PATH``: 2D weights inflated, or any video_nl checkpoint.

    With ``TRAIN.CHECKPOINT_REINIT_HEAD`` the checkpoint's classifier (``head.*``) is not loaded: the model's
    freshly initialised one is kept (fine-tuning on another label set), and the log says so. Every other
    checkpoint tensor the model has must have the model's shape. Model tensors the checkpoint lacks (e.g.
    non-local blocks when starting from an I3D baseline) keep their initialisation; both they and checkpoint
    tensors the model has no place for are listed in the log.

    Raises:
        UserError: a tensor's shape differs (naming the tensors, and ``TRAIN.CHECKPOINT_REINIT_HEAD`` when it
            is the classifier, e.g. a Kinetics-400 checkpoint for a 101-class model).
    """
    from ..models.weights.common import key_listing

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
    reinit = cfg.TRAIN.CHECKPOINT_REINIT_HEAD
    head = {k: v for k, v in state.items() if k.startswith(HEAD_PREFIX)} if reinit else {}
    state = {k: v for k, v in state.items() if k not in head}
    _check_shapes(state, own, path=path)
    kept = {k: v for k, v in state.items() if k in own}
    target.load_state_dict(kept, strict=False)
    stats.info(f"initialised {len(kept)} tensors from {path}")
    if reinit:
        fresh = [f"{k} {list(own[k].shape)}" + (f" (checkpoint {list(head[k].shape)})" if k in head else "")
                 for k in sorted(own) if k.startswith(HEAD_PREFIX)]
        stats.info(f"re-initialised the classifier (TRAIN.CHECKPOINT_REINIT_HEAD): {', '.join(fresh)}")
    missing = sorted(k for k in set(own) - set(kept) if not (reinit and k.startswith(HEAD_PREFIX)))
    if missing:
        stats.info(f"kept the initialisation of {len(missing)} model tensors the checkpoint lacks: "
                   f"{key_listing(missing)}")
    unused = sorted(set(state) - set(own))
    if unused:
        stats.info(f"ignored {len(unused)} checkpoint tensors the model has no place for: {key_listing(unused)}")


def _check_shapes(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], *, path: str) -> None:
    """Raise a :class:`UserError` naming every tensor of ``state`` whose shape differs from the model's."""
    from ..models.weights.common import key_listing

    bad = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    if not bad:
        return
    shapes = key_listing([f"{k} {list(state[k].shape)} vs model {list(own[k].shape)}" for k in bad])
    if all(k.startswith(HEAD_PREFIX) for k in bad):
        hint = ("The classifier was trained for another label set (MODEL.NUM_CLASSES differs): set "
                "TRAIN.CHECKPOINT_REINIT_HEAD True to fine-tune with a re-initialised classifier.")
    else:
        hint = ("The checkpoint is of another architecture: check MODEL.ARCH, RESNET.* and NONLOCAL.* against the "
                "config it was trained with.")
    raise UserError(f"TRAIN.CHECKPOINT_FILE_PATH {path} does not fit the model: {len(bad)} tensor(s) have another "
                    f"shape ({shapes}). {hint}")


def resume_or_init(run: Run) -> None:
    """Continue from the checkpoint rank 0 chooses (``TRAIN.AUTO_RESUME``), else load initial weights.

    Every rank ends with the same weights and position, or every rank stops with a :class:`UserError` naming
    the ranks that could not load the file (see :func:`agreed_checkpoint`).
    """
    cfg = run.cfg
    if run.dist.is_main:
        ckpt.remove_stale_temporaries(cfg.OUTPUT_DIR)
    found = agreed_checkpoint(run) if cfg.TRAIN.AUTO_RESUME else None
    if found is None:
        if cfg.TRAIN.CHECKPOINT_FILE_PATH:
            problem = ""
            try:
                init_weights(cfg, run.model, run.stats)
            except UserError as e:
                problem = str(e)
            _stop_unless_all_ranks_ok(problem, doing=f"initialise from TRAIN.CHECKPOINT_FILE_PATH "
                                                     f"{cfg.TRAIN.CHECKPOINT_FILE_PATH}")
        return
    path, state = found
    ckpt.unwrap(run.model).load_state_dict(state["model_state"])
    run.optimizer.load_state_dict(state["optimizer_state"])
    run.scheduler.load_state_dict(state["scheduler_state"])
    if run.scaler is not None and state.get("scaler_state"):
        run.scaler.load_state_dict(state["scaler_state"])
    run.epoch, run.iteration, run.global_iteration = _position(state)
    rng = state.get("rng_state") or []
    if len(rng) == run.dist.world_size:
        ckpt.restore_rng_state(rng[run.dist.rank])
    else:
        run.stats.info(f"checkpoint has RNG states for {len(rng)} ranks, this run has {run.dist.world_size}: "
                       f"continuing with fresh RNG states (not bitwise-repeatable)")
    run.last_checkpoint = path
    run.stats.info(f"resumed from {path} (epoch {run.epoch}, iteration {run.iteration})")


def _position(state: dict) -> tuple[int, int, int]:
    return int(state["epoch"]), int(state["iteration"]), int(state["global_iteration"])


def agreed_checkpoint(run: Run) -> tuple[str, dict] | None:
    """The checkpoint every rank resumes from: rank 0 picks the newest readable one in ``OUTPUT_DIR`` and
    broadcasts its path and (epoch, iteration, global iteration); every other rank loads exactly that file.

    Collective. Returns ``(path, contents)`` on every rank, or None on every rank when rank 0 found none.

    Raises:
        UserError: on every rank, when any rank cannot read the file or finds another position in it (no
            shared filesystem, a damaged copy); the message names each such rank and the path.
    """
    found = ckpt.newest_readable_checkpoint(run.cfg.OUTPUT_DIR) if run.dist.is_main else None
    choice = du.broadcast_object(None if found is None else (found[0], _position(found[1])))
    if choice is None:
        return None
    path, position = choice
    state, problem = (found[1] if found is not None else None), ""
    if state is None:
        try:
            state = safe_torch_load(path)
            if _position(state) != position:
                problem = f"it holds (epoch, iteration, global iteration) {_position(state)}, not {position}"
        except UserError as e:
            problem = str(e)
        except (KeyError, TypeError, ValueError):
            problem = "it is not a training checkpoint (no epoch/iteration)"
    epoch, iteration, _ = position
    _stop_unless_all_ranks_ok(problem, doing=f"load {path}, the checkpoint rank 0 chose to resume from (epoch "
                                             f"{epoch}, iteration {iteration})")
    return path, state


def _stop_unless_all_ranks_ok(problem: str, *, doing: str) -> None:
    """Collective: raise the same :class:`UserError` on every rank when any rank reports a ``problem`` (a single
    process raises its own problem as it is)."""
    problems = du.all_gather_objects(problem)
    failed = [(rank, text) for rank, text in enumerate(problems) if text]
    if failed and len(problems) == 1:
        raise UserError(problem)
    if failed:
        who = ("rank " if len(failed) == 1 else "ranks ") + ", ".join(str(rank) for rank, _ in failed)
        detail = "; ".join(f"rank {rank}: {text.rstrip('.')}" for rank, text in failed)
        raise UserError(f"{who} could not {doing}. {detail}. Every rank must see the same files at the "
                        f"same paths (OUTPUT_DIR and TRAIN.CHECKPOINT_FILE_PATH on a filesystem all nodes share); "
                        f"stopped before training, so that no rank starts from other weights.")


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
