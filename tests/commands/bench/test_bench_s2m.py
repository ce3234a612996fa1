"""`denseood bench s2m`: GrabCut rows on CPU, SAM rows skipped with a reason, JSON output."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from denseood.commands.bench.s2m import bench_s2m, format_table, make_scene
from denseood.cli import main as cli_main
from denseood.errors import ConfigError


def test_make_scene_objects():
    img, amap = make_scene(64, 128, 3, np.random.default_rng(0))
    assert img.shape == (64, 128, 3) and img.dtype == np.uint8 and amap.shape == (64, 128)
    from scipy import ndimage

    assert ndimage.label(amap > 0.25)[1] == 3


def test_bench_rows_and_skip(tmp_path):
    res = bench_s2m(sizes=[(64, 128)], frames=2, iters=2, device="cpu", sam_weights=tmp_path / "none.pth",
                    progress=False)
    assert len(res["rows"]) == 1
    r = res["rows"][0]
    assert r["backend"] == "grabcut" and r["size"] == [64, 128] and r["iters"] == 2
    assert r["images_per_s"] > 0 and r["ms_per_image"] == pytest.approx(1000 / r["images_per_s"], rel=1e-9)
    assert r["objects_per_image"] == pytest.approx(3.0)
    assert r["ms_prompts"] + r["ms_masks"] <= r["ms_per_image"] + 1e-6
    assert any("SAM" in s and ("CUDA" in s or "not found" in s) for s in res["skipped"])
    assert format_table(res["rows"]).count("\n") == 2
    with pytest.raises(ConfigError):
        bench_s2m(sizes=[(64, 128)], frames=0, device="cpu", progress=False)


def test_cli_json(tmp_path, capsys):
    path = tmp_path / "b.json"
    rc = cli_main(["bench", "s2m", "--device", "cpu", "--sizes", "48x96", "--frames", "1", "--iters", "1",
                   "--json", str(path)])
    assert rc == 0
    data = json.loads(path.read_text())
    assert data["bench"] == "s2m" and data["rows"][0]["size"] == [48, 96]
    out = capsys.readouterr().out
    assert "grabcut" in out and "skipped" in out


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bench_sam_cuda_skip_without_weights(tmp_path):
    res = bench_s2m(sizes=[(64, 128)], frames=1, iters=1, device="cuda", sam_weights=tmp_path / "none.pth",
                    progress=False)
    assert any("not found" in s for s in res["skipped"])
