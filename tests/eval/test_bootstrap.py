"""denseood.eval.bootstrap: the frame bootstrap of AP / FPR95 / AUROC from per-frame histograms."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from denseood.errors import DenseOODError
from denseood.eval import PixelMetrics
from denseood.eval.bootstrap import (METRICS, FrameHistograms, curve_metrics, mean_intervals, pooled_intervals,
                                     resample_weights)
from denseood.eval.curves import summarize_counts

pytestmark = pytest.mark.usefixtures("one_thread")


def _frames(rng, n=12, h=24, w=32, shift=1.5):
    """n frames of N(0, 1) inliers and N(shift, 1) anomalies (~10 % of the pixels), two void rows each."""
    s = rng.normal(size=(n, h, w)).astype(np.float32)
    m = (rng.random((n, h, w)) < 0.1).astype(np.uint8)
    s[m == 1] += shift
    m[:, :2] = 255
    return s, m, [f"f{i:03d}" for i in range(n)]


def test_resample_weights_are_multinomial_counts_and_seeded():
    w = resample_weights(7, 50, seed=3)
    assert w.shape == (50, 7) and w.dtype == np.int32
    assert (w.sum(1) == 7).all() and (w >= 0).all()
    assert np.array_equal(w, resample_weights(7, 50, seed=3))
    assert not np.array_equal(w, resample_weights(7, 50, seed=4))


def test_curve_metrics_equal_summarize_counts_with_empty_bins(rng):
    """The vectorised metrics of each row = summarize_counts on the row's non-empty bins (streaming's convention)."""
    counts = rng.integers(0, 5, size=(6, 2, 40)) * (rng.random((6, 1, 40)) < 0.6)  # many empty bins
    got = curve_metrics(torch.from_numpy(counts).double())
    for r in range(6):
        hd = torch.from_numpy(counts[r]).flip(1)
        keep = hd.sum(0) > 0
        ref, _ = summarize_counts(torch.cumsum(hd[1][keep], 0), torch.cumsum(hd[0][keep], 0),
                                  torch.arange(int(keep.sum()), 0, -1).double())
        for k in METRICS:
            assert float(got[k][r]) == pytest.approx(ref[k], abs=1e-12), (r, k)
    no_anomaly = torch.zeros(1, 2, 5, dtype=torch.float64)
    no_anomaly[0, 0, 2] = 3
    assert all(torch.isnan(v).all() for v in curve_metrics(no_anomaly).values())


def test_point_equals_streaming_pixel_metrics_on_the_same_grid(rng):
    s, m, keys = _frames(rng)
    fh = FrameHistograms(bins=300, score_range=(-5.0, 7.0))
    fh.update(s, m, keys)
    pm = PixelMetrics("streaming", bins=300, score_range=(-5.0, 7.0))
    pm.update(s, m)
    ref = pm.compute()
    got = fh.compute(n_boot=50)
    for k in METRICS:
        assert got["point"][k] == pytest.approx(ref[k], abs=1e-12), k
    assert got["n_frames"] == 12 and got["bins"] == 300


def test_default_grid_point_is_close_to_the_exact_metrics(rng):
    """Auto grid, default 4096 bins: the point estimate differs from the exact (sort-based) numbers by < 1e-3 (AP,
    AUROC) and < 3e-3 (FPR95: the inliers tied in the bin at 95 % TPR), far less than the interval widths."""
    s, m, keys = _frames(rng, n=8, h=48, w=64)
    fh = FrameHistograms()
    fh.update(s, m, keys)
    ex = PixelMetrics("exact")
    ex.update(s, m)
    ref, got = ex.compute(), fh.compute(n_boot=20)["point"]
    for k, tol in (("ap", 1e-3), ("auroc", 1e-3), ("fpr95", 3e-3)):
        assert got[k] == pytest.approx(ref[k], abs=tol), k


def test_common_grid_does_not_depend_on_order_or_split(rng):
    """Frames split over two objects (two ranks), in another order, merged: the same counts and intervals."""
    s, m, keys = _frames(rng)
    s[3] *= 20.0  # one frame with a much wider range: the common grid is coarser than most frames' own grids
    one = FrameHistograms(bins=256)
    one.update(s, m, keys)
    a, b = FrameHistograms(bins=256), FrameHistograms(bins=256)
    for i in reversed(range(12)):
        (a if i % 2 else b).update(s[i], m[i], [keys[i]])
    a.merge(b)
    k1, c1, w1 = one.counts()
    k2, c2, w2 = a.counts()
    assert k1 == k2 == keys and w1 == w2 and torch.equal(c1, c2)
    totals = torch.tensor([[int((m[i] == 0).sum()), int((m[i] == 1).sum())] for i in range(12)], dtype=torch.int64)
    assert torch.equal(c1.sum(-1).to(torch.int64), totals)  # exact re-binning: no count lost
    assert one.compute(n_boot=100, seed=5) == a.compute(n_boot=100, seed=5)
    with pytest.raises(DenseOODError, match="in both objects"):
        a.merge(one)


def test_intervals_equal_explicit_resampling(rng):
    """W @ C pooling = concatenating the drawn frames' pixels and recomputing (streaming, same fixed grid)."""
    s, m, keys = _frames(rng, n=6)
    fh = FrameHistograms(bins=200, score_range=(-5.0, 7.0))
    fh.update(s, m, keys)
    _, counts, _ = fh.counts()
    w = resample_weights(6, 4, seed=1)
    pooled = curve_metrics((torch.from_numpy(w).double() @ counts.double().reshape(6, -1)).reshape(4, 2, -1))
    for r in range(4):
        idx = np.repeat(np.arange(6), w[r])
        pm = PixelMetrics("streaming", bins=200, score_range=(-5.0, 7.0))
        pm.update(s[idx], m[idx])
        ref = pm.compute()
        for k in METRICS:
            assert float(pooled[k][r]) == pytest.approx(ref[k], abs=1e-12), (r, k)


def test_mean_intervals_average_the_defined_frames():
    pf = {k: np.array([0.2, np.nan, 0.6, 0.4]) for k in METRICS}
    w = np.array([[4, 0, 0, 0], [0, 4, 0, 0], [1, 1, 1, 1], [0, 2, 2, 0]], np.int32)
    out = mean_intervals(pf, w, level=0.5)
    means = np.array([0.2, 0.4, 0.6])  # resample 1 (only the NaN frame) is undefined; 2: (0.2+0.6+0.4)/3
    assert out["n_undefined"] == 1
    assert out["ap"] == pytest.approx([np.quantile(means, 0.25), np.quantile(means, 0.75)])


def test_update_checks_keys(rng):
    s, m, keys = _frames(rng, n=2)
    fh = FrameHistograms(bins=16)
    with pytest.raises(DenseOODError, match="2 frames"):
        fh.update(s, m, keys[:1])
    fh.update(s, m, keys)
    with pytest.raises(DenseOODError, match="added twice"):
        fh.update(s[:1], m[:1], keys[:1])


# ----------------------------------------------------------------------------------------------- coverage
F, N0, MU, SC, K, REPS, B = 40, 300, 1.5, 0.5, 256, 200, 300


def _population() -> dict[str, float]:
    """The metrics of the infinite population on the test's bins, in closed form. Pixel scores: inlier N(c, 1),
    anomaly N(MU + c, 1) with a frame effect c ~ N(0, SC^2); a frame has N0 inliers and U{0..60} anomalies
    (independent of c), so pooled pixels are N(0, 1 + SC^2) / N(MU, 1 + SC^2) with prevalence 30 / (30 + N0)."""
    edges = np.linspace(-8, 10, K + 1)
    sd, pi = np.sqrt(1 + SC ** 2), 30 / (30 + N0)
    p0, p1 = np.diff(norm.cdf(edges, 0, sd)), np.diff(norm.cdf(edges, MU, sd))
    pop = curve_metrics(torch.tensor(np.stack([(1 - pi) * p0, pi * p1])[None]))
    return {k: float(v[0]) for k, v in pop.items()}


def test_95_percent_intervals_cover_the_population_value_about_95_percent_of_the_time():
    """200 simulated data sets of 40 correlated frames: the 95 % interval covers the population AP (and AUROC) in
    [0.90, 0.99] of them (binomial: 0.95 +- 2.6 sd, sd = 1.5 %); intervals of half that width (what ignoring the
    frame effect would roughly give) cover clearly less, so the check has power."""
    pop = _population()
    assert 0.3 < pop["ap"] < 0.5 and pop["auroc"] == pytest.approx(norm.cdf(MU / np.sqrt(2 * (1 + SC ** 2))), abs=2e-3)
    rng = np.random.default_rng(1)
    edges = np.linspace(-8, 10, K + 1)
    hits = {k: 0 for k in ("ap", "auroc")}
    narrow = 0
    for rep in range(REPS):
        c, n1 = rng.normal(0, SC, F), rng.integers(0, 61, F)
        counts = np.zeros((F, 2, K), np.int64)
        for f in range(F):
            counts[f, 0] = np.histogram(rng.normal(c[f], 1, N0), edges)[0]
            counts[f, 1] = np.histogram(rng.normal(MU + c[f], 1, n1[f]), edges)[0]
        ci = pooled_intervals(torch.from_numpy(counts), resample_weights(F, B, seed=rep))
        for k in hits:
            hits[k] += ci[k][0] <= pop[k] <= ci[k][1]
        mid, half = (ci["ap"][0] + ci["ap"][1]) / 2, (ci["ap"][1] - ci["ap"][0]) / 4
        narrow += mid - half <= pop["ap"] <= mid + half
    for k, n in hits.items():
        assert 0.90 <= n / REPS <= 0.99, (k, n / REPS)
    assert narrow / REPS < 0.8, narrow / REPS


# ----------------------------------------------------------------------------------------------- torch.distributed
def _ddp_frames():
    """7 frames whose score ranges grow (so the ranks' own grids differ), one all-void and one anomaly-free."""
    rng = np.random.default_rng(2)
    s, m, keys = _frames(rng, n=7)
    s *= (1.0 + 0.7 * np.arange(7))[:, None, None]
    m[3] = 255
    m[5][m[5] == 1] = 0
    return s, m, keys


def _ddp_compute(s, m, keys):
    from denseood.eval.threshold import ThresholdCounts

    fh, tc = FrameHistograms(bins=512), ThresholdCounts(0.8)
    for i in range(len(keys)):  # one frame per update, as eval with --batch-size 1
        fh.update(s[i], m[i], [keys[i]])
        tc.update(s[i], m[i])
    return {"boot": fh.gathered().compute(n_boot=200, seed=1), "caos": fh.gathered().compute(200, 1, per_frame_mean=True),
            "at": tc.compute()}


def _ddp_worker(rank, world, init_file, out_dir):
    import os
    import pickle

    import torch.distributed as tdist

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        s, m, keys = _ddp_frames()
        res = _ddp_compute(s[rank::world], m[rank::world], keys[rank::world])
        with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump(res, f)
    finally:
        tdist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_give_the_single_process_intervals(tmp_path):
    """Frames split over 2 gloo ranks (interleaved, as ShardSampler does): every rank gets exactly the 1-process
    intervals, point estimates and threshold counts."""
    import pickle

    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = _ddp_compute(*_ddp_frames())
    for r in (0, 1):
        got = pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes())
        assert got == single, (r, got, single)
    assert single["boot"]["n_frames"] == 7 and single["boot"]["ci95"]["ap"] is not None
