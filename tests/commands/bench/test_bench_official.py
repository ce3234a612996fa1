"""``denseood bench official`` plumbing, against a fake road-anomaly-benchmark checkout the test writes.

The fake package has the official registry call signatures (``MetricRegistry.get(name)``, ``process_frame``,
``aggregate``) but computes trivially, so the test needs no checkout and no network."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from denseood.commands.bench import official as bo
from denseood.errors import ConfigError

FAKE_METRICS = '''
import numpy as np
from easydict import EasyDict          # the real one or denseood's stand-in
from IPython.display import display_html  # off the metric path: a stand-in when IPython is missing

class _Metric:
    def __init__(self, name):
        self.cfg = EasyDict(name=name, thresh_p=None)

    def process_frame(self, label_pixel_gt, anomaly_p, fid=None, dset_name=None, method_name=None,
                      visualize=True, **_):
        assert anomaly_p.dtype == np.float16 and label_pixel_gt.dtype == np.uint8 and not visualize
        return EasyDict(n=int(label_pixel_gt.size))

    def aggregate(self, frame_results, method_name, dataset_name):
        print("official code prints; the bench swallows it")
        n = sum(r.n for r in frame_results)
        if self.cfg.name == "PixBinaryClass":
            return EasyDict(area_PRC=ANSWER, area_ROC=float(np.trapz([0.0, 1.0], [0.0, 1.0])),
                            tpr95_fpr=0.25, best_f1_threshold=0.5)
        return EasyDict(sIoU_gt=float(self.cfg.thresh_p), prec_pred=0.5, f1_mean=n)

class _Registry:
    def get(self, name):
        if name not in ("PixBinaryClass", "SegEval-AnomalyTrack"):
            raise ValueError(name)
        return _Metric(name)

MetricRegistry = _Registry()
'''


def _fake_checkout(root: Path, answer: float = 0.125) -> Path:
    pkg = root / "road_anomaly_benchmark" / "metrics"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text(FAKE_METRICS.replace("ANSWER", repr(answer)))
    return root


def test_bench_runs_the_official_registry_on_the_same_frames(tmp_path):
    before = set(sys.modules)
    code = bo.load_official(_fake_checkout(tmp_path))
    assert not any(m.startswith("road_anomaly_benchmark") for m in set(sys.modules) - before)
    assert str(tmp_path) not in sys.path
    r = bo.bench_official(code, frames=2, size=(32, 64), seed=3)
    pix, comp = r["pixel"], r["components"]
    assert pix["official"] == {"ap": 0.125, "auroc": 0.5, "fpr95": 0.25, "best_f1_threshold": 0.5}
    assert pix["max_abs_diff"] == max(abs(pix["denseood"][k] - pix["official"][k]) for k in pix["official"])
    assert pix["speedup"] == pytest.approx(pix["official_seconds"] / pix["denseood_seconds"])
    # the segment metric received denseood's best-F1 threshold; process_frame saw both frames (2 x 32 x 64 px)
    assert comp["official"]["sIoU"] == r["threshold"] == pix["denseood"]["best_f1_threshold"]
    assert comp["official"]["mean_F1"] == 2 * 32 * 64
    assert r["stand_ins"] == code.stand_ins and ("numpy.trapz" in r["stand_ins"]) == (not hasattr(np, "trapz"))
    assert "official" in bo.format_report(r) and "faster" in bo.format_report(r)


def test_frames_are_float16_maps_and_labels():
    data = bo.make_frames(2, (32, 64), seed=0)
    assert [(s.dtype, m.dtype, s.shape) for s, m in data] == [(np.float16, np.uint8, (32, 64))] * 2
    assert set(np.unique(data[0][1])) <= {0, 1, 255}


def test_run_writes_json_and_prints(tmp_path, capsys, monkeypatch):
    root = _fake_checkout(tmp_path / "rab", answer=0.25)
    monkeypatch.setenv(bo.OFFICIAL_ENV, str(root))
    out = tmp_path / "r.json"
    assert bo.run(argparse.Namespace(official=None, frames=1, size="16x32", seed=0, json=str(out))) == 0
    assert json.loads(out.read_text())["pixel"]["official"]["ap"] == 0.25
    text = capsys.readouterr().out
    assert "pixel protocol" in text and "prints; the bench swallows" not in text


def test_without_a_checkout_it_refuses_and_names_the_option(monkeypatch, tmp_path):
    monkeypatch.delenv(bo.OFFICIAL_ENV, raising=False)
    with pytest.raises(ConfigError, match="--official DIR or set DENSEOOD_SMIYC_OFFICIAL"):
        bo.resolve_official(None)
    with pytest.raises(ConfigError, match="has no road_anomaly_benchmark/metrics"):
        bo.resolve_official(str(tmp_path))


def test_the_cli_exits_non_zero_without_a_checkout(monkeypatch, capsys):
    from denseood import cli

    monkeypatch.delenv(bo.OFFICIAL_ENV, raising=False)
    assert cli.main(["bench", "official", "--frames", "1", "--size", "16x32"]) != 0
    assert "needs a local checkout" in capsys.readouterr().err


def test_a_missing_import_of_the_checkout_is_a_one_line_error(tmp_path):
    root = _fake_checkout(tmp_path)
    init = root / "road_anomaly_benchmark" / "metrics" / "__init__.py"
    init.write_text("import denseood_no_such_module_xyz\n" + init.read_text())
    with pytest.raises(ConfigError, match="needs the module 'denseood_no_such_module_xyz'"):
        bo.load_official(root)
