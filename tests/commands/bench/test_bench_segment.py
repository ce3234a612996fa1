"""`denseood bench segment`: one row per size and variant from fresh processes, growth as a ratio, JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest

from denseood.cli import main as cli_main
from denseood.commands.bench.segment import bench_segment, growth, side_for, synthetic_image
from denseood.errors import ConfigError


def test_synthetic_image_and_side():
    img = synthetic_image(60, 80)
    assert img.shape == (60, 80, 3) and img.dtype == np.uint8 and len(np.unique(img.reshape(-1, 3), axis=0)) > 100
    assert side_for(4) == 2000 and side_for(64) == 8000 and side_for(1e-9) == 16


def test_growth_is_the_rss_slope_between_smallest_and_largest():
    rows = [{"pixels": 100, "peak_rss_mb": 10.0}, {"pixels": 300, "peak_rss_mb": 11.0},
            {"pixels": 200, "error": "killed"}]
    assert growth(rows) == pytest.approx(2**20 / 200)
    assert growth(rows[:1]) is None


def test_bench_segment_rows_banded_and_full_logits(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = cli_main(["bench", "segment", "--sizes", "0.004,0.01", "--full-logits-max-mp", "0.005", "--train-size", "32x64",
                   "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    got = [(r["variant"], r["size"]) for r in res["rows"]]
    assert got == [("banded", "63x63"), ("full-logits", "63x63"), ("banded", "100x100")]
    for r in res["rows"]:
        assert "error" not in r, r
        assert r["peak_rss_mb"] > 50 and r["seconds"] > 0 and r["objects"] >= 0 and r["pixels"] == int(r["size"].split("x")[0]) ** 2
    banded = [r for r in res["rows"] if r["variant"] == "banded"]
    assert res["growth_bytes_per_pixel"]["banded"] == pytest.approx(growth(banded))
    assert res["growth_bytes_per_pixel"]["full-logits"] is None
    text = capsys.readouterr().out
    assert "growth (banded)" in text and "bytes per input pixel" in text


def test_full_logits_child_scores_in_one_band(tmp_path, monkeypatch):
    """The baseline child sets Inference.tile_elements so that one band covers every row (full-size logits); the
    banded child keeps the shipped value. Neither needs code outside the bench."""
    import denseood.commands.bench.segment as B
    from denseood.infer import Inference

    src = B._CHILD
    assert "_LEGACY" not in src and "Inference.tile_elements = " in src
    ns: dict = {}
    for full in ("0", "1"):
        monkeypatch.setattr(Inference, "tile_elements", Inference.tile_elements)
        prelude = src[:src.index("t = time.perf_counter()")]
        monkeypatch.setattr("sys.argv", ["-c", "img", "ck", "out", full, "64"])
        exec(prelude, ns)
        ns[full] = Inference.tile_elements
    assert ns["0"] == 2 ** 22
    assert ns["1"] >= 8 * 19 * 8000 * 8000  # batch 8, 19 classes, 64 MP: still one band
    monkeypatch.undo()
    assert Inference.tile_elements == 2 ** 22


def test_bench_segment_rejects_bad_sizes():
    with pytest.raises(ConfigError, match="megapixel"):
        bench_segment([0.0])
