"""Per-frame work of the SMIYC pixel protocol (``PixelMetrics("smiyc")``), without sorting the pixels.

A float16 map has at most 65 536 distinct values, so one ``bincount`` over the order-preserving 16-bit keys of
the valid pixels gives everything the official evaluator takes from its sorted arrays: the score range, the
linear-interpolation quantiles (the same float64 operations as ``np.quantile(..., method="linear")``, so the
result is bit-identical) and the per-bin counts. The float16 overflow check reads the inf/NaN bins of that
histogram instead of scanning the map again. See docs/metrics.md and docs/architecture.md.
"""
from __future__ import annotations

import numpy as np

SMIYC_NUM_BINS = 768  # the official 'PixBinaryClass' configuration: num_bins // 2 quantiles per class


def _key_table() -> tuple[np.ndarray, np.ndarray]:
    """float64 value of every 16-bit key (keys ordered like the float16 values) and a non-finite flag per key."""
    k = np.arange(1 << 16, dtype=np.uint32)
    bits = np.where(k & 0x8000, k ^ 0x8000, ~k & 0xFFFF).astype(np.uint16)
    vals = bits.view(np.float16)
    return vals.astype(np.float64), ~np.isfinite(vals)


_VALUES, _NON_FINITE = _key_table()
_BITS = np.arange(1 << 16, dtype=np.intp)
_KEY_OF_BITS = np.where(_BITS & 0x8000, 0xFFFF - _BITS, _BITS | 0x8000).astype(np.intp)
_KEY_OF_BITS2 = 2 * _KEY_OF_BITS  # key * 2 + (anomaly ? 1 : 0) indexes the joint histogram


def sorted_quantiles(values: np.ndarray, cum: np.ndarray, n: int, q: np.ndarray) -> np.ndarray:
    """``np.quantile(a, q)`` (method "linear") of a sorted array of n values given as distinct ``values`` with
    cumulative counts ``cum``, computed with numpy's own float64 operations (bit-identical)."""
    v = (n - 1) * q
    prev = np.floor(v)
    nxt = prev + 1
    top = v >= n - 1
    prev[top] = -1
    nxt[top] = -1
    prev_i, next_i = prev.astype(np.intp), nxt.astype(np.intp)
    gamma = np.asanyarray(v - prev_i, dtype=v.dtype)

    def at(rank: np.ndarray) -> np.ndarray:
        return values[np.searchsorted(cum, np.where(rank < 0, n + rank, rank), side="right")]

    a, b = at(prev_i), at(next_i)
    diff = b - a
    out = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5, casting="unsafe", dtype=out.dtype.type)
    return out


def smiyc_frame(s16: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int] | None:
    """One frame of the official evaluator. s16: (H,W) float16 scores; mask: (H,W) uint8 0/1/255.

    Returns (lower bin edges (K,) float64, anomaly counts (K,) int64, inlier counts (K,) int64, n_anomaly,
    n_inlier), ``None`` when every pixel is void. Raises ``OverflowError`` when a valid float16 score is not
    finite (the caller words the message)."""
    roi = mask != 255
    keys = _KEY_OF_BITS2[s16[roi].view(np.uint16)]
    if keys.size == 0:
        return None
    keys += mask[roi] == 1
    counts = np.bincount(keys, minlength=1 << 17).reshape(-1, 2)
    present = counts.any(axis=1)
    if present[_NON_FINITE].any():
        raise OverflowError("non-finite float16 score")
    values = _VALUES[present]
    c_neg, c_pos = counts[present, 0], counts[present, 1]
    vmin, vmax = float(values[0]), float(values[-1])
    eps = max((vmax - vmin) * 1e-2, 1e-2)
    parts = [np.array([vmin - eps, vmax + eps])]
    half = SMIYC_NUM_BINS // 2
    cums = []
    for c in (c_pos, c_neg):
        cum = np.cumsum(c)
        n = int(cum[-1])
        cums.append((np.r_[0, cum], n))
        if n:
            parts.append(sorted_quantiles(values, cum, n, np.linspace(0, 1, min(half, n))))
    edges = np.unique(np.concatenate(parts))
    idx = np.searchsorted(values, edges, side="left")  # count of scores in [edge_k, edge_{k+1})
    (cp, n_pos), (cn, n_neg) = cums
    tp_ge = n_pos - cp[idx]
    fp_ge = n_neg - cn[idx]
    return (edges[:-1].copy(), (tp_ge[:-1] - tp_ge[1:]).astype(np.int64), (fp_ge[:-1] - fp_ge[1:]).astype(np.int64),
            n_pos, n_neg)
