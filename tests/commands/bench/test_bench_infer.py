"""`denseood bench infer`: rows per size/dtype, ratios vs fp32 of the same run, JSON output."""
from __future__ import annotations

import json

import pytest
import torch

from denseood.commands.bench.infer import bench_infer, default_dtypes, format_table
from denseood.cli import main as cli_main
from denseood.errors import ConfigError


pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_rows_and_ratios():
    rows = bench_infer("fpn", "resnet18", sizes=[(64, 128), (32, 64)], dtypes=["fp32", "bf16"], iters=1, warmup=1,
                       device="cpu", progress=False)
    assert [(tuple(r["size"]), r["dtype"]) for r in rows] == [((64, 128), "fp32"), ((64, 128), "bf16"),
                                                              ((32, 64), "fp32"), ((32, 64), "bf16")]
    for r in rows:
        assert r["images_per_s"] > 0 and r["peak_mem_mb"] > 0 and r["iters"] == 1
        assert r["ms_per_image"] == pytest.approx(1000.0 / r["images_per_s"], rel=1e-9)
        base = next(b for b in rows if b["size"] == r["size"] and b["dtype"] == "fp32")
        assert r["speedup_vs_fp32"] == pytest.approx(r["images_per_s"] / base["images_per_s"], rel=1e-9)
    table = format_table(rows)
    assert table.count("\n") == 1 + len(rows) and "64x128" in table and "bf16" in table


def test_default_dtypes():
    assert default_dtypes(torch.device("cpu")) == ["fp32", "bf16"]
    assert default_dtypes(torch.device("cpu"), compile=True) == ["fp32", "bf16", "fp32+compile", "bf16+compile"]


def test_bad_variant():
    with pytest.raises(ConfigError, match="variant"):
        bench_infer("fpn", "resnet18", sizes=[(32, 64)], dtypes=["fp32+turbo"], iters=1, warmup=0, device="cpu",
                    progress=False)


def test_cli_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    rc = cli_main(["bench", "infer", "--arch", "fpn", "--encoder", "resnet18", "--sizes", "32x64", "--iters", "1",
                   "--device", "cpu", "--json", str(path)])
    assert rc == 0
    data = json.loads(path.read_text())
    assert [r["dtype"] for r in data["rows"]] == ["fp32", "bf16"]
    assert data["rows"][0]["speedup_vs_fp32"] == 1.0
    assert "| 32x64 | bf16 |" in capsys.readouterr().out


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bench_cuda():
    rows = bench_infer("fpn", "resnet18", sizes=[(128, 256)], iters=2, warmup=1, device="cuda", progress=False)
    assert rows[0]["dtype"] == "fp32" and "fp16" in [r["dtype"] for r in rows]
    assert all(r["peak_mem_mb"] > 0 for r in rows)
