"""denseood.eval.threshold: the inlier quantile (exact and histogram), the counts at a threshold, threshold.json."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from denseood.errors import ConfigError
from denseood.eval.threshold import InlierQuantile, ThresholdCounts, load_threshold


def _data(rng, n=6):
    s = rng.normal(size=(n, 40, 50)).astype(np.float32)
    m = np.zeros(s.shape, np.uint8)
    m[:, :4] = 255  # void rows: not counted
    return s, m


@pytest.mark.parametrize("target", [0.01, 0.05, 0.3])
def test_exact_quantile_flags_floor_target_n_inliers(rng, target):
    s, m = _data(rng)
    q = InlierQuantile()
    for i in range(len(s)):
        q.update(s[i], m[i])
    r = q.compute(target)
    inl = s[m == 0]
    assert r["method"] == "exact" and r["threshold_error"] == 0.0 and r["n_pixels"] == inl.size
    n_above = int((inl > r["threshold"]).sum())
    assert n_above == math.floor(target * inl.size)  # no ties in continuous scores: exactly the allowed count
    assert r["calibration_fpr"] == n_above / inl.size <= target


def test_histogram_quantile_is_within_the_stated_error(rng):
    s, m = _data(rng)
    exact, hist = InlierQuantile(), InlierQuantile(exact_limit=3000)  # switches after the first frame
    for i in range(len(s)):
        exact.update(s[i], m[i])
        hist.update(s[i], m[i])
    e, h = exact.compute(0.01), hist.compute(0.01)
    assert h["method"] == "histogram" and 0 < h["threshold_error"] < 1e-4 and h["n_pixels"] == e["n_pixels"]
    assert e["threshold"] <= h["threshold"] <= e["threshold"] + h["threshold_error"]
    inl = s[m == 0]
    assert int((inl > h["threshold"]).sum()) / inl.size == h["calibration_fpr"] <= 0.01


def test_ties_never_exceed_the_target():
    s = np.zeros((1, 10, 10), np.float32)
    s[0, 0, :3] = 1.0  # 3 % of the pixels above the rest, all tied at 0
    q = InlierQuantile()
    q.update(s, np.zeros(s.shape, np.uint8))
    r = q.compute(0.5)
    assert r["threshold"] == 0.0 and r["calibration_fpr"] == 0.03


def test_threshold_counts_equal_numpy(rng):
    s, m = _data(rng)
    m[:, 10:14, 10:20] = 1
    s[m == 1] += 2.0
    tc = ThresholdCounts(1.0)
    tc.update(s[:3], m[:3])
    tc.update(s[3:], m[3:])
    r = tc.compute()
    pred = s > 1.0
    tp, fp = int((pred & (m == 1)).sum()), int((pred & (m == 0)).sum())
    fn, tn = int((~pred & (m == 1)).sum()), int((~pred & (m == 0)).sum())
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (tp, fp, fn, tn)
    assert r["fpr"] == fp / (fp + tn) and r["tpr"] == tp / (tp + fn) and r["precision"] == tp / (tp + fp)
    assert r["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_load_threshold_checks_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_threshold(tmp_path / "none.json")
    p = tmp_path / "threshold.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON"):
        load_threshold(p)
    p.write_text(json.dumps({"score": "msp", "threshold": 0.5}))
    with pytest.raises(ConfigError, match="missing key.*target_fpr"):
        load_threshold(p)
    doc = {"score": "msp", "threshold": 0.5, "target_fpr": 0.01, "n_frames": 2, "n_pixels": 10, "source": {}}
    p.write_text(json.dumps({**doc, "threshold": None}))
    with pytest.raises(ConfigError, match="not a finite number"):
        load_threshold(p)
    p.write_text(json.dumps(doc))
    assert load_threshold(tmp_path)["threshold"] == 0.5 and load_threshold(tmp_path)["file"] == str(p)
