"""torch.distributed setup for torchrun launches, and the few collectives the engine needs.

A process is distributed when torchrun (or any launcher) sets ``WORLD_SIZE`` > 1 together with
``RANK``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` (single node or multi-node rendezvous). Without
them everything here degrades to single-process no-ops, so the same code path serves both cases.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import UserError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, world size, local rank and its compute device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that logs and writes checkpoints)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def resolve_device(name: str, *, local_rank: int = 0) -> torch.device:
    """``auto`` → cuda (this process's local GPU) when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("DEVICE cuda was requested but no CUDA GPU is visible; use DEVICE cpu (or auto).")
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def init_distributed(cfg: Any) -> DistInfo:
    """Initialise the process group from torchrun's environment (or nothing when not launched by it).

    The backend is ``DIST_BACKEND`` (``auto``: nccl on cuda, gloo on cpu); every collective times out
    after ``DIST_TIMEOUT_S`` so a dead peer becomes an error instead of a hang.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.DEVICE, local_rank=local_rank)
    if world_size > 1 and not dist.is_initialized():
        _import_dynamo_first()
        backend = cfg.DIST_BACKEND
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl" and device.type != "cuda":
            raise UserError("DIST_BACKEND nccl needs cuda devices; use DIST_BACKEND gloo (or auto) on cpu.")
        timeout = datetime.timedelta(seconds=cfg.DIST_TIMEOUT_S)
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timeout}
        if device.type == "cuda":
            kwargs["device_id"] = device
        store = restart_scoped_store(timeout)
        if store is not None:
            kwargs.update(store=store, rank=rank, world_size=world_size)
        dist.init_process_group(**kwargs)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def _import_dynamo_first() -> None:
    """Import TorchDynamo before the process group exists.

    Imported after ``init_process_group`` (``torch.use_deterministic_algorithms`` imports it through inductor's
    config, ``TRAIN.COMPILE`` through ``torch.compile``), it keeps the process group referenced, so
    ``destroy_process_group`` no longer stops gloo's worker threads (torch 2.14). One of them still dropping
    a finished collective's tensors while the interpreter finalizes takes the GIL too late and the process
    aborts at exit ("terminate called without an active exception", SIGABRT, after the run's work is done:
    1 in ~20 two-rank runs here). Imported first, it leaves process groups destroyable (once per rank: ~1.5 s of
    start-up and ~150 MiB of resident memory, which deterministic and compiled runs pay anyway).
    """
    import torch._dynamo  # noqa: F401


def restart_scoped_store(timeout: datetime.timedelta) -> dist.Store | None:
    """Under torchrun's shared agent store, this worker group's own namespace of it; None otherwise.

    torchrun (static rendezvous, and c10d unless ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``) keeps one TCPStore for
    all restarts of a job (``--max-restarts``), and the process group's keys are not scoped by attempt: workers
    of a restart can read the addresses the killed attempt published and fail to connect ("Connection
    refused") or hang (pytorch/pytorch#135712, #167288). Prefixing the keys with ``TORCHELASTIC_RESTART_COUNT``
    scopes them; that count is the same for every worker of one launcher (one node). Multi-node elastic runs
    should set ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` for a fresh store per restart (scripts/_launch.sh does).
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "TORCHELASTIC_RESTART_COUNT" not in os.environ:
        return None
    shared = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                           timeout=timeout)
    return dist.PrefixStore(f"video_nl/attempt_{os.environ['TORCHELASTIC_RESTART_COUNT']}", shared)


def cleanup() -> None:
    """Destroy the process group if one was created."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier() -> None:
    """Synchronise all processes (no-op when not distributed)."""
    if world_size() > 1:
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` when not distributed)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, *, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(values: list[float], *, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def per_rank_batch_size(global_batch: int, *, num_ranks: int, key: str) -> int:
    """``global_batch / num_ranks``; a global batch that does not divide by the world size is a UserError."""
    if global_batch % num_ranks:
        raise UserError(f"{key} is the global batch size and must be divisible by the world size ({num_ranks}), "
                        f"got {global_batch}. Use a multiple of {num_ranks} (and scale SOLVER.BASE_LR linearly "
                        f"with it, see docs/engine.md).")
    return global_batch // num_ranks
