"""Frame bootstrap of the pixel metrics (AP, FPR95, AUROC): 95 % intervals from per-frame histograms.

Frames are the resampling unit (pixels of one frame are correlated): each of ``B`` resamples draws ``F`` frames
with replacement (a fixed seed), pools their inlier / anomaly histograms and computes the metrics of the pooled
curve. With the per-frame counts ``C`` (F, 2, K) and the resample weights ``W`` (B, F) (how often each frame was
drawn) the pooled histograms are ``W @ C``, so the cost is O(B * F * K), independent of the number of pixels.

Each frame is binned on its own aligned grid (:class:`~.histogram.StreamingHistogram`'s power-of-two grid of
``bins`` bins, or the fixed ``score_range`` grid); :meth:`FrameHistograms.counts` re-bins every frame exactly onto
one common grid that depends only on the frames themselves (not on their order or on how they were split over
ranks), so a torchrun evaluation gives the same intervals as one process. Memory: F x 2 x (bins + 2) int32 counts
(32 KiB per frame at the default 4096 bins), plus a float64 copy while computing. See docs/metrics.md
(bootstrap intervals) and docs/architecture.md.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from .. import dist
from ..errors import ConfigError, DenseOODError
from ._inputs import prepare_inputs
from .histogram import StreamingHistogram

DEFAULT_BINS = 4096
DEFAULT_B = 1000
DEFAULT_SEED = 0
METRICS = ("ap", "fpr95", "auroc")
_CHUNK_VALUES = 8_000_000  # float64 values of one chunk of pooled histograms (64 MB)


# ----------------------------------------------------------------------------------------------- pure functions
def resample_weights(n_frames: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_frames) int32: how often each frame is drawn in each resample (each row sums to n_frames)."""
    if n_frames < 1 or n_boot < 1:
        raise ConfigError(f"bootstrap needs >= 1 frame and >= 1 resample, got {n_frames} frames, B={n_boot}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_frames, size=(n_boot, n_frames))
    flat = (idx + n_frames * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_frames).reshape(n_boot, n_frames).astype(np.int32)


def curve_metrics(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """AP, FPR95, AUROC of R pooled histograms at once, as ``curves.summarize_counts`` computes them.

    counts: (R, 2, K) float64, row 0 inlier and row 1 anomaly, bins in ascending score order (a pixel is
    predicted anomalous at bin k's threshold when it lies in bin k or above). Empty bins add nothing.
    Returns {ap, fpr95, auroc}: (R,) float64, NaN for a histogram without inliers or without anomalies.
    """
    c = counts.flip(-1)
    fps = torch.cumsum(c[:, 0], -1)
    tps = torch.cumsum(c[:, 1], -1)
    P, N = tps[:, -1:], fps[:, -1:]
    ok = (P[:, 0] > 0) & (N[:, 0] > 0)
    pred = tps + fps
    prec = tps / torch.where(pred > 0, pred, torch.ones_like(pred))  # 0 where nothing is predicted yet
    rec = tps / torch.where(P > 0, P, torch.ones_like(P))
    fpr = fps / torch.where(N > 0, N, torch.ones_like(N))
    drec = torch.diff(rec, dim=-1, prepend=torch.zeros_like(rec[:, :1]))
    ap = (drec * prec).sum(-1)
    dfpr = torch.diff(fpr, dim=-1, prepend=torch.zeros_like(fpr[:, :1]))
    auroc = (dfpr * (rec - 0.5 * drec)).sum(-1)  # trapezoid over (FPR, TPR) from (0, 0)
    i95 = torch.searchsorted(rec.contiguous(), torch.full_like(rec[:, :1], 0.95)).clamp_(max=rec.shape[-1] - 1)
    fpr95 = fpr.gather(-1, i95)[:, 0]
    nan = torch.full_like(ap, math.nan)
    return {"ap": torch.where(ok, ap, nan), "fpr95": torch.where(ok, fpr95, nan), "auroc": torch.where(ok, auroc, nan)}


def _percentile(values: np.ndarray, level: float) -> list[float] | None:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None
    a = (1.0 - level) / 2.0
    return [float(np.quantile(v, a)), float(np.quantile(v, 1.0 - a))]


def pooled_intervals(counts: torch.Tensor, weights: np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """Percentile intervals of the pooled-curve metrics over the resamples.

    counts: (F, 2, K) integer per-frame histograms on one grid (ascending bins); weights: (B, F) from
    :func:`resample_weights`. Returns {metric: [lo, hi] or None} for METRICS, plus ``n_undefined`` (resamples
    without inliers or anomalies; they are left out of the percentiles).
    """
    F, _, K = counts.shape
    C = counts.to(torch.float64).reshape(F, 2 * K)
    Wt = torch.from_numpy(weights).to(torch.float64)
    step = max(1, _CHUNK_VALUES // (2 * K))
    vals: dict[str, list[torch.Tensor]] = {k: [] for k in METRICS}
    for i in range(0, Wt.shape[0], step):
        m = curve_metrics((Wt[i:i + step] @ C).reshape(-1, 2, K))
        for k in METRICS:
            vals[k].append(m[k])
    arrays = {k: torch.cat(v).numpy() for k, v in vals.items()}
    out: dict[str, Any] = {k: _percentile(arrays[k], level) for k in METRICS}
    out["n_undefined"] = int((~np.isfinite(arrays["ap"])).sum())
    return out


def mean_intervals(per_frame: dict[str, np.ndarray], weights: np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """Percentile intervals of per-frame averages (the caos protocol): per_frame {metric: (F,) float, NaN = frame
    skipped}; each resample averages the drawn frames that are defined. Same layout as :func:`pooled_intervals`."""
    Wt = weights.astype(np.float64)
    out: dict[str, Any] = {}
    undefined = None
    for k in METRICS:
        v = np.asarray(per_frame[k], np.float64)
        ok = np.isfinite(v)
        num, den = Wt @ np.where(ok, v, 0.0), Wt @ ok.astype(np.float64)
        means = np.divide(num, den, out=np.full_like(num, np.nan), where=den > 0)
        out[k] = _percentile(means, level)
        undefined = int((den == 0).sum()) if undefined is None else undefined
    out["n_undefined"] = undefined
    return out


# ----------------------------------------------------------------------------------------------- streaming state
class FrameHistograms:
    """Per-frame inlier / anomaly histograms of one score, for the bootstrap.

    ``update(scores, ood_mask, keys)``: scores (B,H,W) or (H,W) float, ood_mask uint8 0/1/255 (as
    ``PixelMetrics.update``), keys: one unique frame id per frame (the frame order of the bootstrap is the sorted
    keys). ``merge(other)`` adds another object's frames; ``gathered()`` returns the frames of every rank
    (collective under torch.distributed); ``counts()`` the common grid; ``compute(...)`` the intervals.
    """

    def __init__(self, bins: int = DEFAULT_BINS, score_range: tuple[float, float] | None = None) -> None:
        if int(bins) < 2:
            raise ConfigError(f"FrameHistograms bins={bins} must be >= 2 (default {DEFAULT_BINS})")
        self.bins = int(bins)
        self.score_range = score_range
        # key -> (e, a, vmin, vmax, counts (2, bins + 2) int32 on the CPU)
        self.frames: dict[str, tuple[int | None, int, float, float, torch.Tensor]] = {}

    def update(self, scores: Any, ood_mask: Any, keys: Sequence[str]) -> None:
        s, m = prepare_inputs(scores, ood_mask)
        if len(keys) != s.shape[0]:
            raise DenseOODError(f"FrameHistograms.update: {len(keys)} keys for {s.shape[0]} frames")
        for b, key in enumerate(keys):
            key = str(key)
            if key in self.frames:
                raise DenseOODError(f"FrameHistograms.update: frame {key!r} was added twice; frame ids must be unique")
            h = StreamingHistogram(self.bins, self.score_range)
            h.add(s[b:b + 1], m[b:b + 1])
            hist = h.hist if h.hist is not None else torch.zeros(2, self.bins + 2, dtype=torch.int64)
            self.frames[key] = (h.e, h.a, h.vmin, h.vmax, hist.to("cpu", torch.int32))

    def merge(self, other: "FrameHistograms") -> None:
        if (other.bins, other.score_range) != (self.bins, self.score_range):
            raise DenseOODError("FrameHistograms.merge: the two objects have different bins or score_range")
        twice = set(self.frames) & set(other.frames)
        if twice:
            raise DenseOODError(f"FrameHistograms.merge: frames {sorted(twice)[:5]} are in both objects")
        self.frames.update(other.frames)

    def gathered(self) -> "FrameHistograms":
        """A FrameHistograms with the frames of every rank (self when not distributed; collective otherwise)."""
        if not dist.is_dist():
            return self
        out = FrameHistograms(self.bins, self.score_range)
        for part in dist.gather(self.frames):
            other = FrameHistograms(self.bins, self.score_range)
            other.frames = part
            out.merge(other)
        return out

    def counts(self) -> tuple[list[str], torch.Tensor, float]:
        """(sorted keys, (F, 2, bins + 2) int32 counts on one common grid in ascending score order, bin width).

        Auto grid: the coarsest frame exponent, widened until it covers every frame's range (exact re-binning by
        factors of two, as ``StreamingHistogram.reduced`` merges ranks)."""
        if not self.frames:
            raise DenseOODError("FrameHistograms: no frames were added; call update() first")
        keys = sorted(self.frames)
        grid = StreamingHistogram(self.bins, self.score_range)
        rows = [self.frames[k] for k in keys]
        if self.score_range is not None:
            lo, hi = self.score_range
            return keys, torch.stack([r[4] for r in rows]), (hi - lo) / self.bins
        es = [r[0] for r in rows if r[0] is not None]
        if not es:
            return keys, torch.stack([r[4] for r in rows]), math.nan
        e, a = grid._fit(max(es), min(r[2] for r in rows), max(r[3] for r in rows))
        out = torch.stack([r[4] if r[0] is None or (r[0], r[1]) == (e, a) else
                           grid._rebin(r[4].to(torch.int64), r[0], r[1], e, a).to(torch.int32) for r in rows])
        return keys, out, math.ldexp(1.0, e)

    def compute(self, n_boot: int = DEFAULT_B, seed: int = DEFAULT_SEED, level: float = 0.95,
                per_frame_mean: bool = False) -> dict[str, Any]:
        """{point: {metric: float}, ci95: {metric: [lo, hi] | None}, n_undefined, n_frames, bins, bin_width}.

        point: the metrics of all frames pooled on the common grid. per_frame_mean: intervals (and point) of the
        average of per-frame metrics (each frame on its own grid; frames lacking a class skipped), as the caos
        protocol averages images."""
        keys, counts, width = self.counts()
        weights = resample_weights(len(keys), n_boot, seed)
        if per_frame_mean:
            own = torch.stack([self.frames[k][4] for k in keys]).to(torch.float64)
            pf = {k: v.numpy() for k, v in curve_metrics(own).items()}
            ci = mean_intervals(pf, weights, level)
            point = {k: float(np.nanmean(pf[k])) if np.isfinite(pf[k]).any() else None for k in METRICS}
        else:
            ci = pooled_intervals(counts, weights, level)
            pm = curve_metrics(counts.sum(0, keepdim=True).to(torch.float64))
            point = {k: float(pm[k][0]) if math.isfinite(float(pm[k][0])) else None for k in METRICS}
        return {"point": point, "ci95": {k: ci[k] for k in METRICS}, "n_undefined": ci["n_undefined"],
                "n_frames": len(keys), "bins": self.bins, "bin_width": width}
