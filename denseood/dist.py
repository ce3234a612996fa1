"""Devices and DDP: the one place that knows about ``torch.distributed`` and device choice.

Runs are started by ``torchrun`` (never a home-made launcher). Every stage uses only the public
names here: :func:`resolve_device`, :func:`all_reduce`, :func:`gather`, :func:`gather_cat`,
:func:`rank`, :func:`world_size`, :func:`is_dist`, :func:`barrier`. See docs/architecture.md.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as tdist

from .errors import ConfigError

_REDUCE_OPS = ("sum", "min", "max")


def launched_by_torchrun() -> bool:
    """True when ``torchrun`` started this process with more than one rank (RANK and WORLD_SIZE set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    """This process's GPU index on its node (``LOCAL_RANK`` from torchrun; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(backend: str | None = None) -> bool:
    """Initialise the default process group when started by torchrun. Returns True when distributed.

    backend: None picks nccl when CUDA is available, else gloo.
    """
    if not launched_by_torchrun():
        return False
    if tdist.is_initialized():
        return True
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    tdist.init_process_group(backend=backend)
    return True


def is_dist() -> bool:
    """True inside an initialised process group."""
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_dist() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        tdist.barrier()


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Device from a user spec.

    spec: ``"auto"``/None -> this rank's GPU (``cuda:LOCAL_RANK``) under a multi-process run with CUDA,
    ``cuda`` when available, else ``cpu``; ``"cpu"``, ``"cuda"``, ``"cuda:N"``; a ``torch.device`` is returned as is.
    Raises ConfigError for a malformed, unsupported or unavailable device.
    """
    if isinstance(spec, torch.device):
        return spec
    if spec in (None, "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if is_dist() or launched_by_torchrun():
            return torch.device("cuda", local_rank())
        return torch.device("cuda")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"invalid device {spec!r}: {e}; use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available; use --device cpu or auto")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device type {dev.type!r} is not supported; use auto, cpu, cuda or cuda:N")
    return dev


def _comm_device(t: torch.Tensor) -> torch.device:
    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return t.device if t.is_cuda else torch.device("cpu")


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``t`` over ranks; returns a new tensor on t's device (a copy when not distributed).

    op: "sum" | "min" | "max". With nccl the reduction runs on this rank's GPU and is copied back.
    """
    if op not in _REDUCE_OPS:
        raise ConfigError(f"unknown reduce op {op!r}; valid: {', '.join(_REDUCE_OPS)}")
    if not is_dist():
        return t.clone()
    dev = _comm_device(t)
    c = t.to(dev).clone()
    tdist.all_reduce(c, op={"sum": tdist.ReduceOp.SUM, "min": tdist.ReduceOp.MIN, "max": tdist.ReduceOp.MAX}[op])
    return c.to(t.device)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks *in place* (no-op when not distributed) and return it."""
    if is_dist():
        t.copy_(all_reduce(t, "sum"))
    return t


def gather(obj: Any) -> list:
    """List of ``obj`` (any picklable value) from every rank in rank order; ``[obj]`` when not distributed."""
    if not is_dist():
        return [obj]
    out: list = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


all_gather_object = gather  # the 0.1 name


def gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate the 1-D tensors of all ranks (rank order, sizes may differ); identity when not distributed."""
    if not is_dist():
        return t
    sizes = gather(int(t.numel()))
    dev = _comm_device(t)
    n = max(sizes)
    buf = torch.zeros(n, dtype=t.dtype, device=dev)
    buf[: t.numel()] = t.to(dev)
    outs = [torch.empty(n, dtype=t.dtype, device=dev) for _ in sizes]
    tdist.all_gather(outs, buf)
    return torch.cat([o[:k] for o, k in zip(outs, sizes)]).to(t.device)


def cleanup() -> None:
    if is_dist():
        tdist.destroy_process_group()


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` of every loader of the package: on Linux the worker asks the kernel for SIGKILL
    when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), so a SIGKILLed main process leaves no orphaned
    workers; a no-op elsewhere or when prctl is unavailable. ``worker_id``: the DataLoader's worker index (unused)."""
    import sys

    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)
