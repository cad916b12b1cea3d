"""DDP plumbing of the trainer: process group, gathering per-rank state, and agreement across ranks.

The rule that keeps a multi-rank job from hanging: a rank never leaves the loop on its own. Stop
signals, non-finite values and write failures are decided together (`agree`, one all-reduce per
step), and work done by rank 0 alone (saving, evaluating, exporting) reports its outcome to every
rank (`rank0`), which then all raise the same error or all continue.
"""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from .config import ConfigError
from .errors import NonFiniteError, StateError, StorageError, TrainingError

T = TypeVar("T")
_ERRORS = {cls.__name__: cls for cls in (TrainingError, NonFiniteError, StorageError, StateError, ConfigError)}


def init() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initialises the process group under torchrun."""
    if not is_multi_process():
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))


def is_multi_process() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def shutdown() -> None:
    """Tear the process group down before exit (left to the interpreter's exit, gloo can abort the process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather(obj: Any, world: int) -> list[Any]:
    """Every rank's `obj`, in rank order (on every rank)."""
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def agree(flags: list[float | torch.Tensor], world: int, device: torch.device) -> list[float]:
    """Element-wise maximum of `flags` over the ranks (the flags themselves on a single process)."""
    t = torch.stack([torch.as_tensor(f, dtype=torch.float32, device=device) for f in flags])
    if world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def mean(values: dict[str, Any], world: int, device: torch.device) -> dict[str, Any]:
    """`values` with each float and one-element tensor replaced by its mean over the ranks (ints and flags as they
    are): what the global batch gave, not one rank's share of it. Every rank calls it with the same keys."""
    keys = [k for k, v in values.items()
            if (isinstance(v, float) or (isinstance(v, torch.Tensor) and v.numel() == 1 and v.is_floating_point()))]
    if world == 1 or not keys:
        return values
    t = torch.stack([torch.as_tensor(values[k], dtype=torch.float64, device=device).reshape(()) for k in keys])
    dist.all_reduce(t)
    return {**values, **dict(zip(keys, (t / world).tolist()))}


def rank0(fn: Callable[[], T], rank: int, world: int) -> T | None:
    """Run `fn` on rank 0 only; if it raises, every rank raises (rank 0 its own error, the others a
    TrainingError of the same kind saying so), so no rank waits for one that has left."""
    error: BaseException | None = None
    result = None
    if rank == 0:
        try:
            result = fn()
        except Exception as e:
            error = e
    if world > 1:
        box = [None if error is None else (type(error).__name__, str(error))]
        dist.broadcast_object_list(box, src=0)
        if rank != 0 and box[0] is not None:
            kind, message = box[0]
            error = _ERRORS.get(kind, TrainingError)(f"rank 0 stopped: {message}")
            error.shared = True
            raise error
    if error is not None:
        raise error
    return result
