"""Pixel-level anomaly metrics: AP, AUROC, FPR at 95 % TPR, best F1, under four protocols.

Label convention (DESIGN.md): ``ood_mask`` uint8 with 0 = inlier, 1 = anomaly, 255 = void (excluded).
Scores: higher = more anomalous; any float dtype (float16/bfloat16 are widened to float32, exactly).

Modes
-----
``exact``      Sort-based over all pooled valid pixels (= Fishyscapes' official evaluator). AP equals
               ``sklearn.metrics.average_precision_score``, AUROC equals ``roc_auc_score``. Memory grows
               with the number of valid pixels (4 bytes each, 8 for float64 scores).
``streaming``  Two integer histograms (inlier / anomaly) over a fixed number of bins; memory independent
               of the dataset size. Tied scores inside one bin are treated as one threshold.
               * ``score_range=(lo, hi)`` given: ``bins`` uniform bins on [lo, hi] plus one underflow
                 (< lo) and one overflow (> hi) bin with exact counts. Out-of-range values are tied
                 at the ends (the curve is exact at lo and hi, coarse beyond); ``compute()`` reports
                 ``n_out_of_range`` and warns.
               * ``score_range=None``: the range is calibrated on the first batch, widened to twice its
                 span, on a grid whose bin width is a power of two and whose origin is a multiple of the
                 width. When later values fall outside, the grid is shifted and, if needed, coarsened by
                 exact factors of two (merging aligned bins), so counts stay exact and nothing is
                 clamped; the only effect is a coarser resolution, reported as ``bin_width``.
               In both cases ``compute()`` warns when 98 % of the scores fall into fewer than 64 bins while
               the observed range is much wider (outliers, or a too wide ``score_range``).
``smiyc``      The SegmentMeIfYouCan road-anomaly-benchmark pixel evaluator (its 2023 form): maps cast
               to float16, void dropped, per-frame bin edges = padded score range + up to 384 quantiles
               of anomaly scores and 384 of inlier scores, all frames' (threshold, count) pairs
               concatenated, sorted high to low and cumulated, repeated thresholds collapsed to their
               last occurrence, end points (0, 0) and (all, all) added, precision 1 where nothing is
               predicted; AP = sum of recall steps times precision (at the reached point), AUROC by
               trapezoid, FPR at the first point with TPR >= 0.95. Per-frame work runs on the CPU with
               NumPy (float16 copies of the maps), like the official code; quantiles (linear
               interpolation) and the padding eps = max(1 % of the range, 0.01) are computed in float64 from
               the float16 values (the padded outer edges only label the lowest threshold, never a count).
               Frames whose pixels are all void are skipped and counted in ``n_skipped``.
``caos``       StreetHazards (CAOS benchmark) official protocol: AP and AUROC with sklearn semantics per
               image, FPR at the recall closest to 0.95 (ties: the higher recall), averaged over images;
               images without anomaly pixels or without inlier pixels are skipped and counted in
               ``n_skipped``. The pooled thresholds/curves of this mode come from an internal streaming
               histogram.

Distributed use: when ``torch.distributed`` is initialised, ``compute()`` is a collective call: every rank
must call it (the same number of times). It reduces the state over ranks (``all_reduce`` for histograms and
counters, ``all_gather`` for variable-size state) and returns the same dict on every rank, equal to a single
process that saw all data (exactly for exact/smiyc/caos and for streaming with ``score_range``; with an
auto-calibrated streaming grid the merged grid may be coarser, within the streaming tolerance).

The input checks live in ``_inputs``, the curve math in ``curves``, the streaming state in ``histogram``.
See docs/architecture.md.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from .. import dist
from ..errors import ConfigError, DenseOODError
from ._inputs import check_finite, prepare_inputs, raise_non_finite
from .smiyc import SMIYC_NUM_BINS, smiyc_frame
from .curves import CURVE_CACHE_POINTS, desc_counts_exact, subsample_index, summarize_counts
from .histogram import StreamingHistogram
from .protocols import PROTOCOLS

MODES = tuple(PROTOCOLS)  # the protocols of eval/protocols.py

__all__ = ["MODES", "SMIYC_NUM_BINS", "PixelMetrics", "prepare_inputs", "check_finite", "raise_non_finite",
           "desc_counts_exact", "summarize_counts"]


def _require_both(n_pos: int, n_neg: int, mode: str) -> None:
    if n_pos + n_neg == 0:
        raise DenseOODError(f"PixelMetrics({mode!r}).compute(): no valid (non-void) pixels were seen; call update() "
                            "with score maps and ood masks (0 inlier, 1 anomaly, 255 void) first")
    if n_pos == 0:
        raise DenseOODError(f"PixelMetrics({mode!r}).compute(): none of the {n_neg} valid pixels is an anomaly (label 1); "
                            "AP and FPR95 are undefined. Check the ood_mask convention (0 inlier, 1 anomaly, 255 void)")
    if n_neg == 0:
        raise DenseOODError(f"PixelMetrics({mode!r}).compute(): all {n_pos} valid pixels are anomalies (label 1) and "
                            "none is an inlier; FPR and AUROC are undefined. Check the ood_mask convention")



class PixelMetrics:
    """Accumulate pixel anomaly metrics over a dataset.

    mode: "exact" | "streaming" | "smiyc" | "caos" (see the module docstring).
    bins: number of histogram bins of the streaming mode (also used by caos for its pooled curve).
    score_range: (lo, hi) of the streaming histogram; None calibrates on the first batch.

    ``update(scores, ood_mask)``: scores (H,W) or (B,H,W) float (numpy or torch, any device),
    ood_mask same shape uint8 with 0 inlier / 1 anomaly / 255 void. State stays on the scores' device.
    ``compute()`` -> dict with float values: ap, auroc, fpr95 (fractions in [0, 1]), threshold_at_tpr95,
    best_f1, best_f1_threshold, n_pixels (valid pixels), n_anomaly, mode, plus mode-specific counters.
    With no valid pixel, or without both anomaly and inlier pixels, it raises DenseOODError (caos: when every
    image was skipped). Collective under torch.distributed: every rank must call it.
    """

    def __init__(self, mode: str = "streaming", bins: int = 100_000, score_range: tuple[float, float] | None = None):
        if mode not in MODES:
            raise ConfigError(f"PixelMetrics mode {mode!r} is unknown; choose one of {', '.join(MODES)}")
        if int(bins) < 2:
            raise ConfigError(f"PixelMetrics bins={bins} must be >= 2 (default 100000)")
        if score_range is not None:
            try:
                lo, hi = (float(v) for v in score_range)
            except (TypeError, ValueError):
                raise ConfigError(f"score_range={score_range!r} must be a pair of numbers (lo, hi)") from None
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ConfigError(f"score_range={score_range!r} must be finite with lo < hi")
            score_range = (lo, hi)
        self.mode = mode
        self.bins = int(bins)
        self.score_range = score_range
        self.reset()

    # ------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all accumulated data."""
        self._device = torch.device("cpu")
        self._hist = StreamingHistogram(self.bins, self.score_range) if self.mode in ("streaming", "caos") else None
        self._pos: list[torch.Tensor] = []  # exact
        self._neg: list[torch.Tensor] = []
        self._frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # smiyc
        self._rows: list[tuple[float, float, float]] = []  # caos
        self._n_pos = 0
        self._n_neg = 0
        self._n_frames = 0
        self._n_skipped = 0
        self._curve: dict | None = None

    # ------------------------------------------------------------------------------------------------
    def update(self, scores: Any, ood_mask: Any) -> None:
        """Add score maps (H,W)|(B,H,W) float and masks (same shape, uint8 0/1/255)."""
        s, m = prepare_inputs(scores, ood_mask)
        self._device = s.device
        self._curve = None
        if self.mode == "streaming":
            self._hist.add(s, m)
            self._n_frames += s.shape[0]
        elif self.mode == "exact":
            pos, neg = s[m == 1], s[m == 0]
            if not bool(torch.isfinite(pos).all() & torch.isfinite(neg).all()):
                raise_non_finite(s, m != 255)
            self._pos.append(pos)
            self._neg.append(neg)
            self._n_pos += pos.numel()
            self._n_neg += neg.numel()
            self._n_frames += s.shape[0]
        elif self.mode == "smiyc":
            self._smiyc_batch(s, m)
        else:  # caos
            self._hist.add(s, m)  # checks finiteness; pooled thresholds and curves
            for b in range(s.shape[0]):
                self._caos_frame(s[b], m[b])

    def _smiyc_batch(self, s: torch.Tensor, m: torch.Tensor) -> None:
        """Frames of one batch (added only when all of them are valid). The finiteness of the scores is read
        from the float16 histogram of each frame (``smiyc.smiyc_frame``); on a non-finite value the float32
        batch is checked to word the error (NaN/inf in the input, or float16 overflow)."""
        s16 = s.to(torch.float16).cpu().numpy()
        mm = m.cpu().numpy()
        rows = []
        for b in range(s.shape[0]):
            try:
                rows.append(smiyc_frame(s16[b], mm[b]))
            except OverflowError:
                check_finite(s, m)
                big = float(np.abs(s[b].cpu().numpy()[mm[b] != 255]).max())
                raise DenseOODError(
                    f"smiyc mode casts score maps to float16 like the official evaluator, and a score of magnitude "
                    f"{big:g} overflows float16 (max 65504); rescale the scores (e.g. divide by a constant; metrics "
                    "are invariant) or use mode 'exact'") from None
        for row in rows:
            self._n_frames += 1
            if row is None:
                self._n_skipped += 1
                continue
            self._frames.append(row[:3])
            self._n_pos += row[3]
            self._n_neg += row[4]

    def _caos_frame(self, s: torch.Tensor, m: torch.Tensor) -> None:
        self._n_frames += 1
        pos, neg = s[m == 1], s[m == 0]
        self._n_pos += pos.numel()
        self._n_neg += neg.numel()
        if pos.numel() == 0 or neg.numel() == 0:
            self._n_skipped += 1
            return
        tps, fps, thr = desc_counts_exact(pos, neg)
        res, _ = summarize_counts(tps, fps, thr)
        # official fpr_and_fdr_at_recall: recall points up to the first full recall, closest to 0.95,
        # ties resolved towards the higher recall (it scans from full recall downwards)
        P = int(tps[-1])
        last = int(torch.searchsorted(tps, tps[-1:]).item())
        rec = tps[: last + 1].to(torch.float64) / float(P)
        d = (rec - 0.95).abs()
        cut = int(torch.nonzero(d == d.min()).flatten()[-1])
        fpr = float(fps[cut]) / float(neg.numel())
        self._rows.append((res["ap"], res["auroc"], fpr))

    # ------------------------------------------------------------------------------------------------
    def compute(self) -> dict:
        """Metrics over everything seen since the last reset (collective under torch.distributed)."""
        fn = {"exact": self._compute_exact, "streaming": self._compute_streaming,
              "smiyc": self._compute_smiyc, "caos": self._compute_caos}[self.mode]
        return fn()

    def _counts_reduced(self) -> tuple[int, int, int, int]:
        t = torch.tensor([self._n_pos, self._n_neg, self._n_frames, self._n_skipped], dtype=torch.int64)
        return tuple(int(v) for v in dist.all_reduce(t).tolist())

    def _compute_exact(self) -> dict:
        dev = self._device
        dtype = torch.float64 if any(p.dtype == torch.float64 for p in self._pos + self._neg) else torch.float32
        if dist.is_dist():
            dtype = torch.float64 if any(d == "float64" for d in dist.gather(str(dtype).split(".")[-1])) else dtype
        pos = torch.cat(self._pos).to(dtype) if self._pos else torch.zeros(0, dtype=dtype, device=dev)
        neg = torch.cat(self._neg).to(dtype) if self._neg else torch.zeros(0, dtype=dtype, device=dev)
        pos, neg = dist.gather_cat(pos), dist.gather_cat(neg)
        n_pos, n_neg, n_frames, _ = self._counts_reduced()
        _require_both(n_pos, n_neg, "exact")
        tps, fps, thr = desc_counts_exact(pos, neg)
        del pos, neg
        res, self._curve = summarize_counts(tps, fps, thr)
        res.update(n_pixels=n_pos + n_neg, n_anomaly=n_pos, n_frames=n_frames, n_thresholds=int(tps.numel()),
                   mode="exact")
        return res

    def _streaming_result(self, label: str) -> tuple[dict, dict, dict]:
        h = self._hist
        hist, e, a, vmin, vmax = h.reduced(self._device)
        n_neg, n_pos = (int(v) for v in hist.sum(1).tolist())
        _require_both(n_pos, n_neg, label)
        thr = h.thresholds(e, a, vmin, hist.device).flip(0)
        hd = hist.flip(1)
        keep = hd.sum(0) > 0
        tps = torch.cumsum(hd[1][keep], 0)
        fps = torch.cumsum(hd[0][keep], 0)
        res, curve = summarize_counts(tps, fps, thr[keep])
        n_out = int(hist[:, 0].sum() + hist[:, -1].sum())
        width = (h.fixed[1] - h.fixed[0]) / h.nb if h.fixed is not None else math.ldexp(1.0, e)
        extra = dict(n_pixels=n_pos + n_neg, n_anomaly=n_pos, bins=h.nb, bin_width=width, score_min=vmin, score_max=vmax, n_out_of_range=n_out,
                     n_thresholds=int(tps.numel()))
        if n_out:
            warnings.warn(
                f"PixelMetrics streaming: {n_out} of {n_pos + n_neg} valid scores fell outside score_range={h.fixed}; "
                f"they are tied in the underflow/overflow bins (observed range {vmin:g}..{vmax:g}); widen score_range "
                "or pass score_range=None for an auto-growing grid", stacklevel=4)
        total = hist.sum(0).cumsum(0)
        n_all = int(total[-1])
        i01 = int(torch.searchsorted(total, torch.tensor([math.ceil(0.01 * n_all)], device=total.device)))
        i99 = int(torch.searchsorted(total, torch.tensor([math.ceil(0.99 * n_all)], device=total.device)))
        bulk_bins = i99 - i01 + 1
        if bulk_bins < 64 and vmax - vmin > 64 * bulk_bins * width:
            warnings.warn(
                f"PixelMetrics streaming: 98 % of the scores fall into {bulk_bins} histogram bins of width {width:g} "
                f"while the scores span {vmin:g}..{vmax:g} (outliers or a too wide score_range), so the metrics are "
                "coarse; pass a score_range=(lo, hi) covering the bulk of the scores, or use mode 'exact'",
                stacklevel=4)
        return res, curve, extra

    def _compute_streaming(self) -> dict:
        res, self._curve, extra = self._streaming_result("streaming")
        res.update(extra)
        res["n_frames"] = self._counts_reduced()[2]
        res["mode"] = "streaming"
        return res

    def _compute_smiyc(self) -> dict:
        frames = self._frames
        if dist.is_dist():
            frames = [f for part in dist.gather(frames) for f in part]
        n_pos, n_neg, n_frames, n_skipped = self._counts_reduced()
        _require_both(n_pos, n_neg, "smiyc")
        thr = np.concatenate([f[0] for f in frames])
        tp = np.concatenate([f[1] for f in frames])
        fp = np.concatenate([f[2] for f in frames])
        order = np.argsort(-thr, kind="stable")
        thr, tpc, fpc = thr[order], np.cumsum(tp[order]), np.cumsum(fp[order])
        last = np.r_[thr[1:] != thr[:-1], True]
        thr, tpc, fpc = thr[last], tpc[last].astype(np.float64), fpc[last].astype(np.float64)
        tpc = np.r_[0.0, tpc, n_pos]
        fpc = np.r_[0.0, fpc, n_neg]
        thr = np.r_[np.inf, thr, thr[-1]]
        pred = tpc + fpc
        prec = np.divide(tpc, pred, out=np.ones_like(tpc), where=pred > 0)
        rec = tpc / n_pos
        fpr = fpc / n_neg
        ap = float(np.sum(np.diff(rec) * prec[1:]))
        auroc = float(np.trapezoid(rec, fpr))
        i95 = int(np.searchsorted(rec, 0.95, side="left"))
        if i95 < rec.size:
            fpr95, thr95 = float(fpr[i95]), float(thr[i95])
        else:  # pragma: no cover - the (all, all) end point has TPR 1
            fpr95, thr95 = 1.0, float(thr[-1])
        f1 = 2 * tpc / (tpc + fpc + n_pos)
        ib = int(np.argmax(f1))
        idx = subsample_index(rec.size, torch.from_numpy(rec), torch.from_numpy(fpr), CURVE_CACHE_POINTS // 3,
                               [i95 if i95 < rec.size else 0, ib]).numpy()
        thr_c = thr[idx].copy()
        thr_c[0] = np.nextafter(thr[1], np.inf)  # the (0, 0) end point: above every threshold, finite
        self._curve = dict(precision=prec[idx], recall=rec[idx], fpr=fpr[idx], tpr=rec[idx], thresholds=thr_c)
        return dict(ap=ap, auroc=auroc, fpr95=fpr95, threshold_at_tpr95=thr95, best_f1=float(f1[ib]),
                    best_f1_threshold=float(thr[ib]), n_pixels=n_pos + n_neg, n_anomaly=n_pos, n_frames=n_frames,
                    n_skipped=n_skipped, n_thresholds=int(rec.size), mode="smiyc")

    def _compute_caos(self) -> dict:
        rows = self._rows
        if dist.is_dist():
            rows = [r for part in dist.gather(rows) for r in part]
        n_pos, n_neg, n_frames, n_skipped = self._counts_reduced()
        if not rows:
            raise DenseOODError(
                f"PixelMetrics('caos').compute(): all {n_frames} images were skipped (each needs both anomaly and "
                "inlier pixels); check the ood_mask convention (0 inlier, 1 anomaly, 255 void)")
        pooled, self._curve, extra = self._streaming_result("caos")
        k = len(rows)
        res = dict(ap=math.fsum(r[0] for r in rows) / k, auroc=math.fsum(r[1] for r in rows) / k,
                   fpr95=math.fsum(r[2] for r in rows) / k,
                   threshold_at_tpr95=pooled["threshold_at_tpr95"], best_f1=pooled["best_f1"],
                   best_f1_threshold=pooled["best_f1_threshold"], n_pixels=n_pos + n_neg, n_anomaly=n_pos,
                   n_frames=n_frames, n_images=k, n_skipped=n_skipped, mode="caos")
        return res

    # ------------------------------------------------------------------------------------------------
    def curves(self, max_points: int = 1000) -> dict:
        """Pooled curves for plotting: numpy arrays precision, recall, fpr, tpr, thresholds (<= ~max_points).

        Uses the last ``compute()``; calls it first when data was added since (collective under DDP).
        The caos mode returns the curves of its pooled streaming histogram.
        """
        if self._curve is None:
            self.compute()
        c = self._curve
        n = c["recall"].size
        if n > max_points:
            k = max(max_points // 3, 2)
            idx = subsample_index(n, torch.from_numpy(c["recall"]), torch.from_numpy(c["fpr"]), k, []).numpy()
        else:
            idx = np.arange(n)
        return {key: np.asarray(v)[idx] for key, v in c.items()}
