"""Thin helpers over torch.distributed for runs started by ``torchrun`` (never a home-made launcher)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(backend: str | None = None) -> bool:
    """Initialise the default process group when started by torchrun. Returns True when distributed.

    backend: None picks nccl when CUDA is available, else gloo.
    """
    if not launched_by_torchrun():
        return False
    if dist.is_initialized():
        return True
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (no-op when not distributed) and return it.

    With nccl the tensor is moved to the current CUDA device for the reduction and copied back.
    """
    if not is_dist():
        return t
    if dist.get_backend() == "nccl" and not t.is_cuda:
        tc = t.cuda()
        dist.all_reduce(tc, op=dist.ReduceOp.SUM)
        t.copy_(tc.cpu())
    else:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_object(obj):
    """List of ``obj`` from every rank (a one-element list when not distributed)."""
    if not is_dist():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
