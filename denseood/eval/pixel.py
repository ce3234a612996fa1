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
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist

from ..errors import ConfigError, DenseOODError

MODES = ("exact", "streaming", "smiyc", "caos")
SMIYC_NUM_BINS = 768  # the official 'PixBinaryClass' configuration: num_bins // 2 quantiles per class
_CURVE_CACHE_POINTS = 20_000


# ----------------------------------------------------------------------------------------------------
# input handling (shared with components.py / objects.py)
# ----------------------------------------------------------------------------------------------------
def _to_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        if not x.flags.c_contiguous or x.strides and min(x.strides) < 0:
            x = np.ascontiguousarray(x)
        return torch.from_numpy(x)
    raise DenseOODError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}")


def prepare_inputs(scores: Any, ood_mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and batch inputs.

    scores: (H,W) or (B,H,W), any float dtype (numpy or torch); ood_mask: same shape, integer or bool
    with values in {0, 1, 255}. Returns ``(scores (B,H,W) float32|float64, mask (B,H,W) uint8)`` on the
    scores' device. float16/bfloat16 are widened to float32 (exact); integer scores become float64.
    """
    s = _to_tensor(scores, "scores")
    m = _to_tensor(ood_mask, "ood_mask")
    if s.ndim == 2:
        s = s.unsqueeze(0)
    if m.ndim == 2:
        m = m.unsqueeze(0)
    if s.ndim != 3:
        raise DenseOODError(f"scores must have shape (H,W) or (B,H,W), got {tuple(s.shape)}")
    if tuple(s.shape) != tuple(m.shape):
        raise DenseOODError(
            f"scores shape {tuple(s.shape)} and ood_mask shape {tuple(m.shape)} differ; resize the score map "
            "to the label resolution before evaluating")
    if s.dtype == torch.bool or s.is_complex():
        raise DenseOODError(f"scores must be real numbers (float), got dtype {s.dtype}")
    if s.dtype in (torch.float16, torch.bfloat16):
        s = s.float()
    elif not s.is_floating_point():
        s = s.double()
    if m.dtype == torch.bool:
        m = m.to(torch.uint8)
    elif m.is_floating_point() or m.is_complex():
        raise DenseOODError(f"ood_mask must be an integer array (uint8 0/1/255), got dtype {m.dtype}")
    if m.device != s.device:
        m = m.to(s.device)
    if m.numel():
        bad = (m != 0) & (m != 1) & (m != 255) if m.dtype != torch.uint8 else (m - 2) < 253  # 2..254 -> 0..252
        if bool(bad.any()):
            vals = torch.unique(m[bad])[:8].tolist()
            raise DenseOODError(
                f"ood_mask contains values {vals} outside {{0 inlier, 1 anomaly, 255 void}}; map the dataset's "
                "labels to this convention first (see denseood/data readers)")
    if m.dtype != torch.uint8:
        m = m.to(torch.uint8)
    return s.contiguous(), m.contiguous()


def raise_non_finite(s: torch.Tensor, valid: torch.Tensor) -> None:
    """Raise a DenseOODError describing the NaN/inf scores at valid pixels (call when they exist)."""
    bad = valid & ~torch.isfinite(s)
    n_nan = int((valid & torch.isnan(s)).sum())
    n_inf = int(bad.sum()) - n_nan
    frames = torch.nonzero(bad.flatten(1).any(1)).flatten()[:5].tolist() if s.ndim == 3 else []
    raise DenseOODError(
        f"anomaly scores contain {n_nan} NaN and {n_inf} inf values at non-void pixels (frames {frames} of this "
        "batch); scores must be finite: check the score function (e.g. log of 0, division by 0) or mark "
        "those pixels void (255)")


def check_finite(s: torch.Tensor, m: torch.Tensor) -> None:
    """Raise if any non-void pixel has a NaN/inf score. s: (B,H,W) float, m: (B,H,W) uint8."""
    valid = m != 255
    if not bool(torch.isfinite(torch.where(valid, s, torch.zeros((), dtype=s.dtype, device=s.device))).all()):
        raise_non_finite(s, valid)


# ----------------------------------------------------------------------------------------------------
# distributed helpers
# ----------------------------------------------------------------------------------------------------
def _is_dist() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def _gather_objects(obj: Any) -> list:
    if not _is_dist():
        return [obj]
    out = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out


def _comm_device(t: torch.Tensor) -> torch.device:
    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu") if not t.is_cuda else t.device


def _all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``t`` over ranks (returns a new tensor on t's device; identity when not distributed)."""
    if not _is_dist():
        return t.clone()
    dev = _comm_device(t)
    c = t.to(dev).clone()
    tdist.all_reduce(c, op={"sum": tdist.ReduceOp.SUM, "min": tdist.ReduceOp.MIN, "max": tdist.ReduceOp.MAX}[op])
    return c.to(t.device)


def _gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate the 1-D tensors of all ranks (rank order); identity when not distributed."""
    if not _is_dist():
        return t
    sizes = _gather_objects(int(t.numel()))
    dev = _comm_device(t)
    n = max(sizes)
    buf = torch.zeros(n, dtype=t.dtype, device=dev)
    buf[: t.numel()] = t.to(dev)
    outs = [torch.empty(n, dtype=t.dtype, device=dev) for _ in sizes]
    tdist.all_gather(outs, buf)
    return torch.cat([o[:k] for o, k in zip(outs, sizes)]).to(t.device)


# ----------------------------------------------------------------------------------------------------
# curve math shared by the modes
# ----------------------------------------------------------------------------------------------------
def _sort1d(x: torch.Tensor) -> torch.Tensor:
    """Ascending sort; NumPy's SIMD sort on the CPU (much faster than torch's), torch on GPU."""
    if x.is_cuda:
        return torch.sort(x).values
    a = x.numpy().copy()
    a.sort(kind="quicksort")
    return torch.from_numpy(a)


def desc_counts_exact(pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cumulative counts at every distinct score, thresholds high to low.

    pos, neg: 1-D float tensors (scores of anomaly / inlier pixels), same dtype and device.
    Returns ``tps, fps`` (int64, non-decreasing, last = (P, N)) and ``thr`` (same dtype as the scores):
    at threshold ``thr[k]`` a pixel is predicted anomalous when ``score >= thr[k]``.
    """
    allv = _sort1d(torch.cat([pos, neg]))
    pos_sorted = _sort1d(pos)
    n = allv.numel()
    change = torch.nonzero(allv[1:] != allv[:-1]).flatten() + 1
    starts = torch.cat([torch.zeros(1, dtype=torch.int64, device=allv.device), change])
    vals = allv[starts]
    cnt_ge = n - starts
    pos_ge = pos_sorted.numel() - torch.searchsorted(pos_sorted, vals, right=False)
    tps = pos_ge.flip(0)
    fps = (cnt_ge - pos_ge).flip(0)
    return tps, fps, vals.flip(0)


def _subsample_index(n: int, rec: torch.Tensor, fpr: torch.Tensor, k: int, extra: list[int]) -> torch.Tensor:
    """Indices (sorted, unique) of at most ~3k points of a curve of length n, spread in index, recall and FPR."""
    dev = rec.device
    if n <= 3 * k:
        return torch.arange(n, device=dev)
    grid = torch.linspace(0, 1, k, dtype=torch.float64, device=dev)
    idx = torch.cat([
        torch.linspace(0, n - 1, k, device=dev).round().long(),
        torch.searchsorted(rec.contiguous(), grid).clamp_(max=n - 1),
        torch.searchsorted(fpr.contiguous(), grid).clamp_(max=n - 1),
        torch.tensor(extra + [0, n - 1], dtype=torch.int64, device=dev),
    ])
    return torch.unique(idx)


def summarize_counts(tps: torch.Tensor, fps: torch.Tensor, thr: torch.Tensor) -> tuple[dict, dict]:
    """sklearn-style metrics from cumulative counts at distinct thresholds (high to low).

    tps, fps: 1-D (int or float) non-decreasing, last element = (P, N), P > 0 and N > 0; thr: same length.
    AP = sum_k (R_k - R_{k-1}) * P_k (= ``average_precision_score``); AUROC = trapezoid over (FPR, TPR) with
    (0, 0) prepended (= ``roc_auc_score``); FPR95 at the first point with TPR >= 0.95 (Fishyscapes);
    best F1 over thresholds (first maximum). Returns (metrics dict of floats, curve dict of numpy arrays).
    """
    tps = tps.to(torch.float64)
    fps = fps.to(torch.float64)
    thr = thr.to(torch.float64)
    P = tps[-1]
    N = fps[-1]
    prec = tps / (tps + fps)
    rec = tps / P
    ap = (torch.diff(rec, prepend=rec.new_zeros(1)) * prec).sum()
    zero = tps.new_zeros(1)
    tpr = torch.cat([zero, rec])
    fpr = torch.cat([zero, fps / N])
    auroc = torch.trapezoid(tpr, fpr)
    i95 = torch.searchsorted(tpr, torch.tensor([0.95], dtype=torch.float64, device=tpr.device)).clamp_(max=tpr.numel() - 1)
    f1 = 2 * tps / (tps + fps + P)
    ib = torch.argmax(f1)
    vals = torch.stack([ap, auroc, fpr[i95[0]], thr[(i95[0] - 1).clamp(min=0)], f1[ib], thr[ib]]).tolist()
    i95_i, ib_i = int(i95[0]) - 1, int(ib)
    out = dict(ap=vals[0], auroc=vals[1], fpr95=vals[2], threshold_at_tpr95=vals[3], best_f1=vals[4],
               best_f1_threshold=vals[5])
    idx = _subsample_index(rec.numel(), rec, fpr[1:], _CURVE_CACHE_POINTS // 3, [max(i95_i, 0), ib_i])
    one = np.ones(1)
    curve = dict(
        precision=np.concatenate([one, prec[idx].cpu().numpy()]),
        recall=np.concatenate([0 * one, rec[idx].cpu().numpy()]),
        fpr=np.concatenate([0 * one, fpr[1:][idx].cpu().numpy()]),
        tpr=np.concatenate([0 * one, rec[idx].cpu().numpy()]),
        thresholds=np.concatenate([np.nextafter(thr[:1].cpu().numpy(), np.inf), thr[idx].cpu().numpy()]),
    )
    return out, curve


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


# ----------------------------------------------------------------------------------------------------
# streaming histogram
# ----------------------------------------------------------------------------------------------------
class _Histogram:
    """Two integer histograms (row 0 inlier, row 1 anomaly) of ``nb`` bins plus underflow/overflow slots.

    Storage slot 0 = underflow (< lo), 1..nb = regular bins, nb+1 = overflow (> hi). With a fixed range
    (``score_range``) the regular bins are uniform on [lo, hi]; otherwise the grid is aligned: bin width
    2**e, bin k covers [(a+k) 2**e, (a+k+1) 2**e), and the out-of-range slots stay empty.
    """

    def __init__(self, bins: int, score_range: tuple[float, float] | None):
        self.nb = int(bins)
        self.fixed = score_range
        self.e: int | None = None
        self.a: int = 0
        self.vmin = math.inf
        self.vmax = -math.inf
        self.hist: torch.Tensor | None = None

    # -- grid -------------------------------------------------------------------------------------
    def _covers(self, e: int, a: int, m0: float, m1: float) -> bool:
        return math.floor(math.ldexp(m0, -e)) - a >= 0 and math.floor(math.ldexp(m1, -e)) - a <= self.nb - 1

    def _fit(self, e: int, m0: float, m1: float) -> tuple[int, int]:
        """Smallest exponent >= e (and centred origin) whose grid covers [m0, m1]."""
        center = 0.5 * (m0 + m1)
        while True:
            a = math.floor(math.ldexp(center, -e)) - self.nb // 2
            if self._covers(e, a, m0, m1):
                return e, a
            e += 1

    def _rebin(self, hist: torch.Tensor, e: int, a: int, e2: int, a2: int) -> torch.Tensor:
        """Exactly re-bin an aligned histogram from grid (e, a) to the coarser/shifted grid (e2 >= e, a2)."""
        nb = self.nb
        idx = ((torch.arange(nb, dtype=torch.int64, device=hist.device) + a) >> (e2 - e)) - a2
        occupied = hist[:, 1:nb + 1].sum(0) > 0
        if bool(((idx < 0) | (idx >= nb))[occupied].any()):  # pragma: no cover - guarded by _fit
            raise DenseOODError("internal error: streaming histogram re-binning lost counts")
        out = torch.zeros_like(hist)
        out[:, 1:nb + 1].index_add_(1, idx.clamp(0, nb - 1), hist[:, 1:nb + 1])
        return out

    def _ensure_grid(self, bmin: float, bmax: float) -> None:
        m0, m1 = min(self.vmin, bmin), max(self.vmax, bmax)
        if self.e is None:
            span = bmax - bmin
            if not span > 0:
                span = max(abs(bmax), 1.0) * 2.0 ** -10
            e = math.ceil(math.log2(2.0 * span / self.nb))
            self.e, self.a = self._fit(e, m0, m1)
            return
        if self._covers(self.e, self.a, m0, m1):
            return
        e2, a2 = self._fit(self.e, m0, m1)
        self.hist = self._rebin(self.hist, self.e, self.a, e2, a2)
        self.e, self.a = e2, a2

    # -- update -----------------------------------------------------------------------------------
    def add(self, s: torch.Tensor, m: torch.Tensor) -> None:
        """s: (B,H,W) float32/64 finite at valid pixels (checked here), m: (B,H,W) uint8 0/1/255."""
        nb = self.nb
        valid = m != 255
        inf = torch.tensor(math.inf, dtype=s.dtype, device=s.device)
        xs = torch.where(valid, s, inf)
        lo_hi = torch.stack([xs.amin(), torch.where(valid, s, -inf).amax(), valid.sum().to(s.dtype)]).tolist()
        bmin, bmax, nvalid = lo_hi
        if nvalid == 0:
            return
        if not (math.isfinite(bmin) and math.isfinite(bmax)):
            raise_non_finite(s, valid)
        if self.hist is None:
            self.hist = torch.zeros(2, nb + 2, dtype=torch.int64, device=s.device)
        # slot index + (nb + 2) * class, computed in the scores' float type where that is exact:
        # floor(x * 2**-e) is exact in any binary float; the offset subtraction needs |a| + nb < 2**24 in float32.
        if self.fixed is None:
            self._ensure_grid(bmin, bmax)
            x = xs if (s.dtype == torch.float64 or abs(self.a) + nb + 2 < 2 ** 24) else xs.double()
            t = torch.mul(x, math.ldexp(1.0, -self.e)).floor_()
            t.clamp_(self.a - 1, self.a + nb).sub_(self.a - 1)  # void (+inf) -> nb + 1, discarded below
        else:
            lo, hi = self.fixed
            t = torch.sub(xs, lo).mul_(nb / (hi - lo)).floor_().clamp_(0, nb - 1).add_(1)
            t.masked_fill_(xs < lo, 0)
            t.masked_fill_(xs > hi, nb + 1)
        t.add_(m.clamp(max=2), alpha=nb + 2)  # class 0 inlier, 1 anomaly, 2 void (discarded)
        counts = torch.bincount(t.to(torch.int32 if 3 * (nb + 2) < 2 ** 31 else torch.int64).flatten(),
                                minlength=3 * (nb + 2))[: 2 * (nb + 2)]
        self.hist += counts.view(2, nb + 2)
        self.vmin = min(self.vmin, bmin)
        self.vmax = max(self.vmax, bmax)

    # -- reduction and metrics --------------------------------------------------------------------
    def reduced(self, device: torch.device) -> tuple[torch.Tensor, int, int, float, float]:
        """(hist summed over ranks, e, a, vmin, vmax) on a common grid; collective when distributed."""
        nb = self.nb
        hist = self.hist if self.hist is not None else torch.zeros(2, nb + 2, dtype=torch.int64, device=device)
        e, a, vmin, vmax = self.e, self.a, self.vmin, self.vmax
        if _is_dist():
            states = _gather_objects((self.e, self.a, self.vmin, self.vmax))
            vmin = min(st[2] for st in states)
            vmax = max(st[3] for st in states)
            if self.fixed is None:
                es = [st[0] for st in states if st[0] is not None]
                if es:
                    e, a = self._fit(max(es), vmin, vmax)
                    if self.e is not None:
                        hist = self._rebin(hist, self.e, self.a, e, a)
            hist = _all_reduce(hist.to(device))
        return hist, e, a, vmin, vmax

    def thresholds(self, e: int | None, a: int, vmin: float, device: torch.device) -> torch.Tensor:
        """Lower edge of every storage slot (float64): underflow -> vmin, overflow -> hi."""
        nb = self.nb
        k = torch.arange(nb, dtype=torch.float64, device=device)
        if self.fixed is None:
            reg = (k + a) * math.ldexp(1.0, e if e is not None else 0)
            hi = math.inf
        else:
            lo, hi = self.fixed
            reg = lo + k * ((hi - lo) / nb)
        return torch.cat([torch.tensor([vmin], dtype=torch.float64, device=device), reg,
                          torch.tensor([hi], dtype=torch.float64, device=device)])


# ----------------------------------------------------------------------------------------------------
# the public class
# ----------------------------------------------------------------------------------------------------
class PixelMetrics:
    """Accumulate pixel anomaly metrics over a dataset.

    mode: "exact" | "streaming" | "smiyc" | "caos" (see the module docstring).
    bins: number of histogram bins of the streaming mode (also used by caos for its pooled curve).
    score_range: (lo, hi) of the streaming histogram; None calibrates on the first batch.

    ``update(scores, ood_mask)``: scores (H,W) or (B,H,W) float (numpy or torch, any device),
    ood_mask same shape uint8 with 0 inlier / 1 anomaly / 255 void. State stays on the scores' device.
    ``compute()`` -> dict with float values: ap, auroc, fpr95 (fractions in [0, 1]), threshold_at_tpr95,
    best_f1, best_f1_threshold, n_pixels (valid pixels), n_anomaly, mode, plus mode-specific counters.
    Collective under torch.distributed: every rank must call it.
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
        self._hist = _Histogram(self.bins, self.score_range) if self.mode in ("streaming", "caos") else None
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
            check_finite(s, m)
            for b in range(s.shape[0]):
                self._smiyc_frame(s[b], m[b])
        else:  # caos
            self._hist.add(s, m)  # checks finiteness; pooled thresholds and curves
            for b in range(s.shape[0]):
                self._caos_frame(s[b], m[b])

    def _smiyc_frame(self, s: torch.Tensor, m: torch.Tensor) -> None:
        self._n_frames += 1
        s16 = s.to(torch.float16).cpu().numpy()
        mm = m.cpu().numpy()
        roi = mm != 255
        p = s16[roi]
        if p.size == 0:
            self._n_skipped += 1
            return
        if not np.isfinite(p).all():
            big = float(np.abs(s.cpu().numpy()[roi]).max())
            raise DenseOODError(
                f"smiyc mode casts score maps to float16 like the official evaluator, and a score of magnitude {big:g} "
                "overflows float16 (max 65504); rescale the scores (e.g. divide by a constant; metrics are invariant) "
                "or use mode 'exact'")
        lab = mm[roi] == 1
        pos = np.sort(p[lab].astype(np.float64))
        neg = np.sort(p[~lab].astype(np.float64))
        vmin, vmax = float(p.min()), float(p.max())
        eps = max((vmax - vmin) * 1e-2, 1e-2)
        parts = [np.array([vmin - eps, vmax + eps])]
        half = SMIYC_NUM_BINS // 2
        for arr in (pos, neg):
            if arr.size:
                parts.append(np.quantile(arr, np.linspace(0, 1, min(half, arr.size))))
        edges = np.unique(np.concatenate(parts))
        # count of scores in [edge_k, edge_{k+1}); the top edge lies above every score
        tp_ge = pos.size - np.searchsorted(pos, edges, side="left")
        fp_ge = neg.size - np.searchsorted(neg, edges, side="left")
        self._frames.append((edges[:-1].copy(), (tp_ge[:-1] - tp_ge[1:]).astype(np.int64),
                             (fp_ge[:-1] - fp_ge[1:]).astype(np.int64)))
        self._n_pos += pos.size
        self._n_neg += neg.size

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
        return tuple(int(v) for v in _all_reduce(t).tolist())

    def _compute_exact(self) -> dict:
        dev = self._device
        dtype = torch.float64 if any(p.dtype == torch.float64 for p in self._pos + self._neg) else torch.float32
        if _is_dist():
            dtype = torch.float64 if any(d == "float64" for d in _gather_objects(str(dtype).split(".")[-1])) else dtype
        pos = torch.cat(self._pos).to(dtype) if self._pos else torch.zeros(0, dtype=dtype, device=dev)
        neg = torch.cat(self._neg).to(dtype) if self._neg else torch.zeros(0, dtype=dtype, device=dev)
        pos, neg = _gather_cat(pos), _gather_cat(neg)
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
        if _is_dist():
            frames = [f for part in _gather_objects(frames) for f in part]
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
        idx = _subsample_index(rec.size, torch.from_numpy(rec), torch.from_numpy(fpr), _CURVE_CACHE_POINTS // 3,
                               [i95 if i95 < rec.size else 0, ib]).numpy()
        thr_c = thr[idx].copy()
        thr_c[0] = np.nextafter(thr[1], np.inf)  # the (0, 0) end point: above every threshold, finite
        self._curve = dict(precision=prec[idx], recall=rec[idx], fpr=fpr[idx], tpr=rec[idx], thresholds=thr_c)
        return dict(ap=ap, auroc=auroc, fpr95=fpr95, threshold_at_tpr95=thr95, best_f1=float(f1[ib]),
                    best_f1_threshold=float(thr[ib]), n_pixels=n_pos + n_neg, n_anomaly=n_pos, n_frames=n_frames,
                    n_skipped=n_skipped, n_thresholds=int(rec.size), mode="smiyc")

    def _compute_caos(self) -> dict:
        rows = self._rows
        if _is_dist():
            rows = [r for part in _gather_objects(rows) for r in part]
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
            idx = _subsample_index(n, torch.from_numpy(c["recall"]), torch.from_numpy(c["fpr"]), k, []).numpy()
        else:
            idx = np.arange(n)
        return {key: np.asarray(v)[idx] for key, v in c.items()}
