"""The metrics micro-benchmark on a tiny input: structure and internal consistency of its figures."""
from __future__ import annotations

import argparse
import json

import pytest

from denseood.commands.bench.metrics import bench_metrics, format_table, run
from denseood.errors import ConfigError


def test_bench_metrics_tiny():
    r = bench_metrics(frames=3, size=(64, 128), seed=1)
    assert r["frames"] == 3 and r["size"] == [64, 128]
    assert r["megapixels"] == pytest.approx(3 * 64 * 128 / 1e6)
    assert 0 < r["valid_pixels"] < 3 * 64 * 128
    for key in ("streaming", "exact", "sklearn"):
        v = r[key]
        assert v["seconds"] > 0 and v["peak_mb"] >= 0
        assert 0 < v["ap"] < 1 and 0.5 < v["auroc"] <= 1
    assert r["abs_diff_exact_vs_sklearn_ap"] < 1e-9 and r["abs_diff_exact_vs_sklearn_auroc"] < 1e-9
    assert r["exact"]["ap"] == pytest.approx(r["sklearn"]["ap"], abs=1e-9)
    assert r["abs_diff_streaming_vs_exact_ap"] < 1e-3 and r["abs_diff_streaming_vs_exact_fpr95"] < 1e-3
    for key in ("components_clean", "components_salt2pct"):
        c = r[key]
        assert c["frames"] == 3 and c["seconds"] > 0 and c["n_gt"] > 0
    assert r["threshold"] == r["exact"]["best_f1_threshold"]
    assert r["smiyc_equals_legacy"] and r["smiyc"]["ap"] == r["smiyc_legacy"]["ap"]
    table = format_table(r)
    # the printed figures are the measured ones (throughput and speed-ups are the JSON's, not recomputed)
    assert f"{r['streaming']['mpx_per_s']:>9.1f}" in table and f"{r['speedup_smiyc_vs_legacy']:.1f}x" in table
    assert f"{r['speedup_streaming_vs_sklearn']:.1f}x faster" in table
    assert "smiyc protocol" in table
    assert "streaming" in table and "sklearn" in table and "ComponentMetrics" in table


def test_run_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert run(argparse.Namespace(frames=2, sizes="32x64", json=str(out))) == 0
    data = json.loads(out.read_text())
    assert data["frames"] == 2 and data["size"] == [32, 64]
    assert "Mpx/s" in capsys.readouterr().out
    with pytest.raises(ConfigError):
        run(argparse.Namespace(frames=2, sizes="32by64", json=None))
