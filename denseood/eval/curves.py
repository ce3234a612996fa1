"""Curve math shared by the pixel protocols: cumulative counts at distinct thresholds -> AP, AUROC, FPR95, F1.

Counts are ordered from the highest threshold to the lowest; at threshold ``t`` a pixel is predicted anomalous
when ``score >= t``. See docs/architecture.md.
"""
from __future__ import annotations

import numpy as np
import torch

CURVE_CACHE_POINTS = 20_000  # points kept of a curve for ``PixelMetrics.curves``


def sort1d(x: torch.Tensor) -> torch.Tensor:
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
    allv = sort1d(torch.cat([pos, neg]))
    pos_sorted = sort1d(pos)
    n = allv.numel()
    change = torch.nonzero(allv[1:] != allv[:-1]).flatten() + 1
    starts = torch.cat([torch.zeros(1, dtype=torch.int64, device=allv.device), change])
    vals = allv[starts]
    cnt_ge = n - starts
    pos_ge = pos_sorted.numel() - torch.searchsorted(pos_sorted, vals, right=False)
    tps = pos_ge.flip(0)
    fps = (cnt_ge - pos_ge).flip(0)
    return tps, fps, vals.flip(0)


def subsample_index(n: int, rec: torch.Tensor, fpr: torch.Tensor, k: int, extra: list[int]) -> torch.Tensor:
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
    idx = subsample_index(rec.numel(), rec, fpr[1:], CURVE_CACHE_POINTS // 3, [max(i95_i, 0), ib_i])
    one = np.ones(1)
    curve = dict(
        precision=np.concatenate([one, prec[idx].cpu().numpy()]),
        recall=np.concatenate([0 * one, rec[idx].cpu().numpy()]),
        fpr=np.concatenate([0 * one, fpr[1:][idx].cpu().numpy()]),
        tpr=np.concatenate([0 * one, rec[idx].cpu().numpy()]),
        thresholds=np.concatenate([np.nextafter(thr[:1].cpu().numpy(), np.inf), thr[idx].cpu().numpy()]),
    )
    return out, curve

