"""PixelMetrics against independent references: sklearn, brute force, and re-implementations of the SMIYC and
StreetHazards (CAOS) protocols written here from their descriptions."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from denseood.errors import ConfigError, DenseOODError
from denseood.eval import PixelMetrics
from denseood.eval.histogram import StreamingHistogram as _Histogram

MODES = ["exact", "streaming", "smiyc", "caos"]


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def random_batch(rng, b=3, h=32, w=48, p_anom=0.1, p_void=0.1, dtype=np.float32):
    m = (rng.random((b, h, w)) < p_anom).astype(np.uint8)
    m[rng.random((b, h, w)) < p_void] = 255
    s = rng.normal(size=(b, h, w)) + 1.2 * (m == 1)
    return s.astype(dtype), m


def realistic_batch(rng, b=4, h=64, w=128):
    """Smooth-ish score maps with blob anomalies and void, scores roughly in [0, 1]."""
    yy, xx = np.mgrid[0:h, 0:w]
    s = np.empty((b, h, w), np.float32)
    m = np.zeros((b, h, w), np.uint8)
    for i in range(b):
        base = 0.25 + 0.1 * np.sin(xx / 7.0 + i) * np.cos(yy / 5.0) + 0.08 * rng.normal(size=(h, w))
        for _ in range(3):
            cy, cx, r = rng.integers(10, h - 10), rng.integers(10, w - 10), rng.integers(4, 10)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            m[i][blob] = 1
            base[blob] += 0.35 + 0.1 * rng.normal(size=int(blob.sum()))
        m[i][: h // 8] = 255
        s[i] = base
    return s, m


def pooled(s, m):
    v = m != 255
    return (m[v] == 1), s[v].astype(np.float64)


# --------------------------------------------------------------------------------------------------
# straightforward references
# --------------------------------------------------------------------------------------------------
def ref_fpr95(y, x):
    fpr, tpr, thr = roc_curve(y, x, drop_intermediate=False)
    i = int(np.argmax(tpr >= 0.95))
    return fpr[i], thr[i]


def ref_best_f1(y, x):
    """Brute force over every distinct score: predict score >= t."""
    best, best_t = -1.0, None
    P = y.sum()
    for t in np.unique(x)[::-1]:
        pred = x >= t
        tp = np.sum(pred & y)
        f1 = 2 * tp / (pred.sum() + P)
        if f1 > best:
            best, best_t = f1, t
    return best, best_t


def check_against_sklearn(res, s, m, tol=1e-9, brute=True):
    y, x = pooled(s, m)
    assert res["n_pixels"] == y.size and res["n_anomaly"] == y.sum()
    assert abs(res["ap"] - average_precision_score(y, x)) < tol
    assert abs(res["auroc"] - roc_auc_score(y, x)) < tol
    f, t = ref_fpr95(y, x)
    assert abs(res["fpr95"] - f) < tol
    assert res["threshold_at_tpr95"] == pytest.approx(t, abs=1e-12)
    if brute:
        f1, t1 = ref_best_f1(y, x)
        assert res["best_f1"] == pytest.approx(f1, abs=1e-12)
        assert res["best_f1_threshold"] == pytest.approx(t1, abs=1e-12)


def run(mode, batches, **kw):
    pm = PixelMetrics(mode, **kw)
    for s, m in batches:
        pm.update(s, m)
    return pm.compute(), pm


def ref_smiyc(frames):
    """SMIYC pixel evaluator re-implemented from its description (float16 maps, per-frame percentile bins,
    concatenation, collapse to last occurrence, end points, step AP, trapezoid AUROC)."""
    thr_all, tp_all, fp_all = [], [], []
    P = N = 0
    for s, m in frames:
        s16 = s.astype(np.float16).astype(np.float64)
        roi = m != 255
        vals, lab = s16[roi], m[roi] == 1
        if vals.size == 0:
            continue
        pos, neg = vals[lab], vals[~lab]
        P += pos.size
        N += neg.size
        lo, hi = vals.min(), vals.max()
        eps = max(0.01 * (hi - lo), 0.01)
        edges = [lo - eps, hi + eps]
        for a in (pos, neg):
            if a.size:
                edges += list(np.quantile(a, np.linspace(0, 1, min(384, a.size))))
        edges = np.array(sorted(set(edges)))
        for k in range(edges.size - 1):  # bin [e_k, e_k+1): brute-force counts
            thr_all.append(edges[k])
            tp_all.append(int(np.sum((pos >= edges[k]) & (pos < edges[k + 1]))))
            fp_all.append(int(np.sum((neg >= edges[k]) & (neg < edges[k + 1]))))
    thr_all = np.array(thr_all)
    order = sorted(range(thr_all.size), key=lambda i: -thr_all[i])
    pts = {}
    tp = fp = 0
    for i in order:  # cumulate high -> low; a repeated threshold keeps its last (complete) value
        tp += tp_all[i]
        fp += fp_all[i]
        pts[thr_all[i]] = (tp, fp)
    ts = sorted(pts, reverse=True)
    tps = np.array([0] + [pts[t][0] for t in ts] + [P], float)
    fps = np.array([0] + [pts[t][1] for t in ts] + [N], float)
    thr = [math.inf] + ts + [ts[-1]]
    prec = np.array([1.0 if a + b == 0 else a / (a + b) for a, b in zip(tps, fps)])
    rec, fpr = tps / P, fps / N
    ap = sum((rec[k] - rec[k - 1]) * prec[k] for k in range(1, rec.size))
    auroc = sum((fpr[k] - fpr[k - 1]) * (rec[k] + rec[k - 1]) / 2 for k in range(1, rec.size))
    i95 = next(k for k in range(rec.size) if rec[k] >= 0.95)
    f1 = 2 * tps / (tps + fps + P)
    ib = int(np.argmax(f1))
    return dict(ap=ap, auroc=auroc, fpr95=fpr[i95], threshold_at_tpr95=thr[i95], best_f1=f1[ib],
                best_f1_threshold=thr[ib], n_pixels=P + N, n_anomaly=P)


def ref_caos(frames):
    """StreetHazards protocol: sklearn AP/AUROC per image, FPR at recall closest to 0.95, mean over images."""
    aps, aurocs, fprs, skipped = [], [], [], 0
    for s, m in frames:
        roi = m != 255
        y, x = m[roi] == 1, s[roi].astype(np.float64)
        if y.sum() == 0 or (~y).sum() == 0:
            skipped += 1
            continue
        aps.append(average_precision_score(y, x))
        aurocs.append(roc_auc_score(y, x))
        ts = np.unique(x)[::-1]
        P, N = y.sum(), (~y).sum()
        best, best_d = None, None
        for t in ts:  # thresholds high -> low until full recall
            tp = np.sum(x[y] >= t)
            d = abs(tp / P - 0.95)
            if best_d is None or d <= best_d:  # ties -> the lower threshold (higher recall)
                best, best_d = np.sum(x[~y] >= t) / N, d
            if tp == P:
                break
        fprs.append(best)
    return dict(ap=np.mean(aps), auroc=np.mean(aurocs), fpr95=np.mean(fprs), n_images=len(aps), n_skipped=skipped)


# --------------------------------------------------------------------------------------------------
# exact
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_equals_sklearn_random(seed, dtype):
    rng = np.random.default_rng(seed)
    s, m = random_batch(rng, dtype=dtype)
    res, _ = run("exact", [(s[:1], m[:1]), (s[1:], m[1:])])
    check_against_sklearn(res, s, m)
    assert res["mode"] == "exact"


def test_exact_ties_and_negative_scores():
    rng = np.random.default_rng(3)
    s, m = random_batch(rng, b=2, h=40, w=40)
    s = np.round(s * 3) / 3 - 5.0  # heavy ties, all negative (and -0.0 / 0.0 handled as equal)
    s[0, 0, :5] = -0.0
    s[0, 1, :5] = 0.0
    res, _ = run("exact", [(s, m)])
    check_against_sklearn(res, s, m)


def test_constant_scores():
    rng = np.random.default_rng(4)
    _, m = random_batch(rng)
    s = np.full(m.shape, 0.7, np.float32)
    y, _ = pooled(s, m)
    for mode in ("exact", "streaming", "smiyc"):
        res, _ = run(mode, [(s, m)])
        assert res["ap"] == pytest.approx(y.mean(), abs=1e-12)
        assert res["auroc"] == pytest.approx(0.5, abs=1e-12)
        assert res["fpr95"] == pytest.approx(1.0, abs=1e-12)


def test_single_anomalous_pixel():
    rng = np.random.default_rng(5)
    s = rng.random((20, 30)).astype(np.float32)
    m = np.zeros((20, 30), np.uint8)
    m[7, 9] = 1
    res, _ = run("exact", [(s, m)])
    check_against_sklearn(res, s, m)
    rank = np.sum(s > s[7, 9])  # inliers above the single anomaly
    assert res["ap"] == pytest.approx(1.0 / (rank + 1), abs=1e-12)
    for mode in ("streaming", "caos"):
        r, _ = run(mode, [(s, m)])
        assert abs(r["ap"] - res["ap"]) < 1e-9 and abs(r["auroc"] - res["auroc"]) < 1e-6
    r, _ = run("smiyc", [(s, m)])  # float16 maps: compare with the reference protocol
    ref = ref_smiyc([(s, m)])
    assert r["ap"] == pytest.approx(ref["ap"], abs=1e-12) and r["auroc"] == pytest.approx(ref["auroc"], abs=1e-12)


def test_all_void_and_anomaly_free_images():
    rng = np.random.default_rng(6)
    s, m = random_batch(rng, b=4)
    m[1] = 255  # all void
    m[2][m[2] == 1] = 0  # no anomaly
    res, _ = run("exact", [(s, m)])
    check_against_sklearn(res, s, m)
    r, _ = run("streaming", [(s, m)])
    assert abs(r["ap"] - res["ap"]) < 1e-3
    c, _ = run("caos", [(s, m)])
    assert c["n_skipped"] == 2 and c["n_images"] == 2
    sm, _ = run("smiyc", [(s, m)])
    assert sm["n_skipped"] == 1 and sm["n_frames"] == 4


def test_hw_and_bhw_give_the_same_result():
    rng = np.random.default_rng(7)
    s, m = random_batch(rng, b=3)
    for mode in MODES:
        a, _ = run(mode, [(s, m)])
        b, _ = run(mode, [(s[i], m[i]) for i in range(3)])
        c, _ = run(mode, [(torch.from_numpy(s[i]), torch.from_numpy(m[i])) for i in range(3)])
        for k in ("ap", "auroc", "fpr95", "best_f1", "best_f1_threshold", "n_pixels"):
            assert a[k] == b[k] == c[k], (mode, k)


@pytest.mark.parametrize("tdtype", [torch.float16, torch.bfloat16])
def test_half_precision_torch_inputs(tdtype):
    rng = np.random.default_rng(8)
    s, m = random_batch(rng)
    st = torch.from_numpy(s).to(tdtype)
    s_ref = st.float().numpy()  # the values actually given
    res, _ = run("exact", [(st, torch.from_numpy(m))])
    check_against_sklearn(res, s_ref, m, brute=False)
    r, _ = run("streaming", [(st, torch.from_numpy(m))])
    assert abs(r["ap"] - res["ap"]) < 1e-3


# --------------------------------------------------------------------------------------------------
# streaming
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("score_range", [None, (-0.5, 1.5)])
def test_streaming_close_to_exact_on_realistic_maps(score_range):
    rng = np.random.default_rng(9)
    batches = [realistic_batch(rng) for _ in range(3)]
    ex, _ = run("exact", batches)
    st, _ = run("streaming", batches, score_range=score_range)
    for k in ("ap", "auroc", "fpr95"):
        assert abs(st[k] - ex[k]) < 1e-3, k
    assert abs(st["best_f1"] - ex["best_f1"]) < 1e-3
    assert st["n_pixels"] == ex["n_pixels"] and st["n_anomaly"] == ex["n_anomaly"]
    assert st["n_out_of_range"] == 0


def test_streaming_grid_grows_when_later_values_leave_the_range():
    rng = np.random.default_rng(10)
    s, m = realistic_batch(rng, b=3)
    narrow = (0.4 + 0.01 * s[:1], m[:1])  # calibration batch with a tiny range
    later = (s[1:] * 3.0 - 1.0, m[1:])  # far outside it, both sides
    batches = [narrow, later]
    ex, _ = run("exact", batches)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no resolution warning: the grid only grew by a few factors of two
        st, _ = run("streaming", batches)
    for k in ("ap", "auroc", "fpr95"):
        assert abs(st[k] - ex[k]) < 1e-3, k
    assert st["n_pixels"] == ex["n_pixels"]


def test_streaming_rebinning_is_exact():
    """A histogram grown by re-binning equals one filled directly on the final grid."""
    rng = np.random.default_rng(11)
    s, m = random_batch(rng, b=2)
    a = _Histogram(1000, None)
    a.add(torch.from_numpy(s[:1] * 0.01), torch.from_numpy(m[:1]))
    e0 = a.e
    a.add(torch.from_numpy(s[1:] * 5), torch.from_numpy(m[1:]))
    assert a.e > e0
    b = _Histogram(1000, None)
    b.e, b.a, b.hist = a.e, a.a, torch.zeros(2, 1002, dtype=torch.int64)
    b.add(torch.from_numpy(s[:1] * 0.01), torch.from_numpy(m[:1]))
    b.add(torch.from_numpy(s[1:] * 5), torch.from_numpy(m[1:]))
    assert torch.equal(a.hist, b.hist)
    # and the counts are those of a direct floor((x / w)) - a binning
    x = np.concatenate([(s[:1] * 0.01)[m[:1] == 1], (s[1:] * 5)[m[1:] == 1]]).astype(np.float64)
    direct = np.bincount((np.floor(x / 2.0 ** a.e) - a.a).astype(np.int64) + 1, minlength=1002)
    assert np.array_equal(a.hist[1].numpy(), direct)


def test_streaming_fixed_range_out_of_range_values_are_counted_and_warned():
    rng = np.random.default_rng(12)
    s, m = realistic_batch(rng, b=2)
    s[0, 20, :10] = 50.0  # outliers above the range
    s[1, 30, :10] = -50.0
    with pytest.warns(UserWarning, match="outside score_range"):
        st, _ = run("streaming", [(s, m)], score_range=(-0.5, 1.5))
    n_out = int(((s > 1.5) | (s < -0.5))[m != 255].sum())
    assert st["n_out_of_range"] == n_out > 0
    ex, _ = run("exact", [(s, m)])
    assert abs(st["ap"] - ex["ap"]) < 1e-3
    # a value exactly at the top of the range is a regular bin, not overflow
    s2 = np.clip(s, 0, 1)
    st2, _ = run("streaming", [(s2, m)], score_range=(0.0, 1.0))
    assert st2["n_out_of_range"] == 0


def test_streaming_outlier_resolution_warning():
    rng = np.random.default_rng(13)
    s, m = realistic_batch(rng, b=2)
    s[1, 20, 5] = 1e6
    with pytest.warns(UserWarning, match="histogram bins"):
        run("streaming", [(s[:1], m[:1]), (s[1:], m[1:])])


# --------------------------------------------------------------------------------------------------
# smiyc
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_smiyc_matches_reference(seed):
    rng = np.random.default_rng(seed)
    s, m = random_batch(rng, b=4, h=40, w=60)
    m[1][m[1] == 1] = 0  # a frame without anomalies
    m[2] = 255  # an all-void frame
    s[3, :10] = np.round(s[3, :10], 1)  # ties across frames
    res, _ = run("smiyc", [(s[:2], m[:2]), (s[2:], m[2:])])
    ref = ref_smiyc([(s[i], m[i]) for i in range(4)])
    for k, v in ref.items():
        assert res[k] == pytest.approx(v, abs=1e-12), k


def test_smiyc_close_to_sklearn():
    rng = np.random.default_rng(14)
    batches = [realistic_batch(rng, b=3)]
    s, m = batches[0]
    res, _ = run("smiyc", batches)
    y, x = pooled(s.astype(np.float16).astype(np.float32), m)
    assert abs(res["ap"] - average_precision_score(y, x)) < 3e-3
    assert abs(res["auroc"] - roc_auc_score(y, x)) < 1e-3


def test_smiyc_exact_on_few_distinct_values():
    """With <= 384 pixels per class in a frame every score is a bin edge: the curve is the exact one."""
    rng = np.random.default_rng(15)
    m = (rng.random((3, 12, 20)) < 0.3).astype(np.uint8)
    s = (np.round(rng.random((3, 12, 20)) * 8) / 8 + 0.3 * m).astype(np.float32)
    res, _ = run("smiyc", [(s, m)])
    y, x = pooled(s, m)
    assert abs(res["ap"] - average_precision_score(y, x)) < 1e-12
    assert abs(res["auroc"] - roc_auc_score(y, x)) < 1e-12


def test_smiyc_float16_overflow_is_a_clear_error():
    s = np.zeros((8, 8), np.float32)
    s[0, 0] = 1e6
    m = np.zeros((8, 8), np.uint8)
    m[1, 1] = 1
    with pytest.raises(DenseOODError, match="float16"):
        PixelMetrics("smiyc").update(s, m)


# --------------------------------------------------------------------------------------------------
# caos
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_caos_matches_reference(seed):
    rng = np.random.default_rng(seed)
    s, m = random_batch(rng, b=5, h=24, w=32)
    s[0] = np.round(s[0], 1)  # ties
    m[1][m[1] == 1] = 0  # no anomaly -> skipped
    m[2][m[2] == 0] = 1  # only anomaly -> skipped
    res, _ = run("caos", [(s, m)])
    ref = ref_caos([(s[i], m[i]) for i in range(5)])
    for k, v in ref.items():
        assert res[k] == pytest.approx(v, abs=1e-12), k
    assert res["n_frames"] == 5


def test_caos_all_images_skipped_raises():
    m = np.zeros((2, 8, 8), np.uint8)
    m[1] = 1
    pm = PixelMetrics("caos")
    pm.update(np.random.default_rng(0).random((2, 8, 8)), m)
    with pytest.raises(DenseOODError, match="skipped"):
        pm.compute()


# --------------------------------------------------------------------------------------------------
# errors and API
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_raise(mode, bad):
    rng = np.random.default_rng(16)
    s, m = random_batch(rng, b=2)
    s[1, 3, 4] = bad
    m[1, 3, 4] = 0
    with pytest.raises(DenseOODError, match="NaN|inf"):
        PixelMetrics(mode).update(s, m)
    m[1, 3, 4] = 255  # on a void pixel the score is ignored
    pm = PixelMetrics(mode)
    pm.update(s, m)
    assert math.isfinite(pm.compute()["ap"])


@pytest.mark.parametrize("mode", MODES)
def test_missing_class_raises(mode):
    s = np.random.default_rng(0).random((2, 8, 8))
    for fill in (0, 1):
        pm = PixelMetrics(mode)
        pm.update(s, np.full((2, 8, 8), fill, np.uint8))
        with pytest.raises(DenseOODError):
            pm.compute()
    with pytest.raises(DenseOODError):
        PixelMetrics(mode).compute()


def test_input_validation():
    s = np.zeros((4, 4), np.float32)
    with pytest.raises(DenseOODError, match="outside"):
        PixelMetrics().update(s, np.full((4, 4), 2, np.uint8))
    with pytest.raises(DenseOODError, match="shape"):
        PixelMetrics().update(s, np.zeros((4, 5), np.uint8))
    with pytest.raises(DenseOODError, match="shape"):
        PixelMetrics().update(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 4), np.uint8))
    with pytest.raises(ConfigError):
        PixelMetrics("nope")
    with pytest.raises(ConfigError):
        PixelMetrics("streaming", score_range=(1.0, 0.0))
    with pytest.raises(DenseOODError, match="integer"):
        PixelMetrics().update(s, np.zeros((4, 4), np.float32))


def test_curves_and_reset():
    rng = np.random.default_rng(17)
    s, m = realistic_batch(rng, b=2)
    for mode in MODES:
        pm = PixelMetrics(mode)
        pm.update(s, m)
        res = pm.compute()
        c = pm.curves(max_points=200)
        assert set(c) >= {"precision", "recall", "fpr", "tpr", "thresholds"}
        assert np.all(np.isfinite(c["thresholds"])) and np.all(np.diff(c["thresholds"]) <= 0)
        assert c["recall"].size <= 260
        assert np.all(np.diff(c["recall"]) >= 0) and np.all(np.diff(c["fpr"]) >= 0)
        assert c["recall"][0] == 0 and c["recall"][-1] == pytest.approx(1.0)
        assert np.all((c["precision"] >= 0) & (c["precision"] <= 1))
        if mode != "caos":  # caos: pooled curve vs per-image mean
            assert np.trapezoid(c["tpr"], c["fpr"]) == pytest.approx(res["auroc"], abs=2e-3)
        pm.reset()
        with pytest.raises(DenseOODError):
            pm.compute()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", MODES)
def test_cuda_equals_cpu(mode):
    rng = np.random.default_rng(18)
    s, m = realistic_batch(rng, b=2)
    cpu, _ = run(mode, [(s, m)], score_range=(-0.5, 1.5)) if mode == "streaming" else run(mode, [(s, m)])
    pm = PixelMetrics(mode, score_range=(-0.5, 1.5) if mode == "streaming" else None)
    pm.update(torch.from_numpy(s).cuda(), torch.from_numpy(m).cuda())
    gpu = pm.compute()
    for k in ("ap", "auroc", "fpr95"):
        assert gpu[k] == pytest.approx(cpu[k], abs=1e-9)


# ----------------------------------------------------------------------------- smiyc: histogram path == sorting path
def test_smiyc_sorted_quantiles_bit_identical_to_np_quantile():
    from denseood.eval.smiyc import sorted_quantiles
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 7, 383, 384, 385, 1000, 50_000):
        a = np.sort(rng.normal(size=n).astype(np.float16).astype(np.float64))
        if n > 10:
            a[: n // 3] = a[0]  # heavy ties
            a = np.sort(a)
        values, counts = np.unique(a, return_counts=True)
        q = np.linspace(0, 1, min(384, n))
        got = sorted_quantiles(values, np.cumsum(counts), n, q)
        assert np.array_equal(got.view(np.int64), np.quantile(a, q).view(np.int64)), n


def test_smiyc_equals_the_former_sorting_implementation():
    from denseood.commands.bench.metrics import _smiyc_legacy, synthetic_frame
    rng = np.random.default_rng(3)
    data = [synthetic_frame(rng, 96, 160) for _ in range(4)]
    s, m = data[0]
    data.append((s, np.full_like(m, 255)))  # all void: skipped
    data.append((s * 0 + 0.5, np.where(m == 1, 0, m)))  # one value, no anomaly
    data.append(((-s).astype(np.float32), m))  # negative scores (sign bit in the float16 keys)
    pm = PixelMetrics("smiyc")
    for x, y in data:
        pm.update(x, y)
    got, ref = pm.compute(), _smiyc_legacy(data)
    assert got == ref


def test_smiyc_overflow_and_nan_messages_unchanged():
    s = np.zeros((2, 8, 8), np.float32)
    m = np.zeros((2, 8, 8), np.uint8)
    m[:, :2] = 1
    s[1, 5, 5] = 1e6
    pm = PixelMetrics("smiyc")
    with pytest.raises(DenseOODError, match="overflows float16"):
        pm.update(s, m)
    assert pm._n_frames == 0  # nothing of the failed batch was added
    s[1, 6, 6] = np.nan
    with pytest.raises(DenseOODError, match="NaN"):
        pm.update(s, m)
    s[1, 6, 6] = 0
    m[1, 5, 5] = 255  # the overflowing pixel is void: fine
    pm.update(s, m)
    assert pm.compute()["n_frames"] == 2
