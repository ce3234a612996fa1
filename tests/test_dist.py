"""dist: device choice (incl. this rank's GPU under torchrun) and the reductions, single- and two-process."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from denseood import dist
from denseood.errors import ConfigError


def test_resolve_device_auto_and_explicit(monkeypatch):
    assert dist.resolve_device(torch.device("cpu", 0)) == torch.device("cpu", 0)  # passthrough
    assert dist.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dist.resolve_device("auto") == torch.device("cpu") and dist.resolve_device(None) == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available; use --device cpu"):
        dist.resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="invalid device 'gpu0'"):
        dist.resolve_device("gpu0")
    with pytest.raises(ConfigError, match="not supported"):
        dist.resolve_device("meta")


def test_auto_picks_this_ranks_gpu_under_torchrun(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert dist.resolve_device("auto") == torch.device("cuda")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dist.launched_by_torchrun() and dist.local_rank() == 1
    assert dist.resolve_device("auto") == torch.device("cuda", 1)


def test_single_process_reductions_are_identities():
    t = torch.tensor([1.0, 2.0])
    r = dist.all_reduce(t)
    assert torch.equal(r, t) and r is not t  # a copy
    assert dist.all_reduce_sum(t) is t
    assert dist.gather({"a": 1}) == [{"a": 1}] and dist.all_gather_object(3) == [3]
    assert dist.gather_cat(t) is t and dist.world_size() == 1 and dist.rank() == 0 and dist.is_main()
    with pytest.raises(ConfigError, match="unknown reduce op 'mean'"):
        dist.all_reduce(t, "mean")


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        t = torch.tensor([float(rank + 1), 10.0 * (rank + 1)])
        res = {
            "sum": dist.all_reduce(t, "sum").tolist(), "min": dist.all_reduce(t, "min").tolist(),
            "max": dist.all_reduce(t, "max").tolist(), "t_after": t.tolist(),
            "inplace": dist.all_reduce_sum(t.clone()).tolist(),
            "gather": dist.gather(("r", rank)),
            "cat": dist.gather_cat(torch.arange(rank + 2, dtype=torch.int64) + 100 * rank).tolist(),
            "rank": dist.rank(), "world": dist.world_size(),
        }
        with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump(res, f)
    finally:
        tdist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_reductions(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        r = pickle.loads((tmp_path / f"rank{rank}.pkl").read_bytes())
        assert r["sum"] == [3.0, 30.0] and r["min"] == [1.0, 10.0] and r["max"] == [2.0, 20.0]
        assert r["t_after"] == [float(rank + 1), 10.0 * (rank + 1)]  # all_reduce leaves its input alone
        assert r["inplace"] == [3.0, 30.0]
        assert r["gather"] == [("r", 0), ("r", 1)]
        assert r["cat"] == [0, 1, 100, 101, 102]  # sizes differ per rank, rank order kept
        assert (r["rank"], r["world"]) == (rank, 2)
