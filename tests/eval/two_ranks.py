"""Two torch.distributed ranks emulated in one process: two threads, and ``denseood.dist``'s public reductions
(``is_dist``, ``rank``, ``world_size``, ``gather``, ``all_reduce``, ``gather_cat``, ``barrier``) replaced by an
exchange through shared slots and a barrier. Metrics reduce only through those names (denseood/dist.py), so a
metric object per thread behaves as it would on two real ranks; tests/eval/test_ddp_metrics.py checks the real
thing (gloo, two processes), which takes seconds instead of milliseconds.
"""
from __future__ import annotations

import pickle
import threading
from typing import Any, Callable

import pytest
import torch

import denseood.dist as ddist


class _World:
    """Slots and a barrier shared by ``n`` threads; each thread's rank is thread-local."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.barrier = threading.Barrier(n, timeout=60)
        self.slots: list[Any] = [None] * n
        self.local = threading.local()

    def rank(self) -> int:
        return self.local.rank

    def gather(self, obj: Any) -> list:
        """Every rank's ``obj`` in rank order, pickled like ``all_gather_object``."""
        self.slots[self.rank()] = pickle.loads(pickle.dumps(obj))
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()   # nobody writes the next round before everybody has read this one
        return out

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        st = torch.stack([p.to(t.device) for p in self.gather(t.detach().cpu())])
        out = {"sum": lambda: st.sum(0), "min": lambda: st.min(0).values, "max": lambda: st.max(0).values}[op]()
        return out.to(t.dtype)

    def gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([p.to(t.device) for p in self.gather(t.detach().cpu())])


def on_two_ranks(fn: Callable[[int], Any]) -> list[Any]:
    """``[fn(0), fn(1)]``, run concurrently as ranks 0 and 1 of an emulated process group. ``fn`` must make the
    same collective calls on both ranks (as under torchrun); an exception on either rank is re-raised."""
    world = _World(2)
    results: list[Any] = [None, None]
    errors: list[BaseException | None] = [None, None]

    def body(r: int) -> None:
        world.local.rank = r
        try:
            results[r] = fn(r)
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the test's thread
            errors[r] = e
            world.barrier.abort()   # the other rank stops waiting

    with pytest.MonkeyPatch.context() as mp:
        for name, value in (("is_dist", lambda: True), ("rank", world.rank), ("world_size", lambda: world.n),
                            ("gather", world.gather), ("all_reduce", world.all_reduce),
                            ("gather_cat", world.gather_cat), ("barrier", lambda: world.barrier.wait())):
            mp.setattr(ddist, name, value)
        threads = [threading.Thread(target=body, args=(r,)) for r in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    first = next((e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)),
                 next((e for e in errors if e is not None), None))
    if first is not None:
        raise first
    return results
