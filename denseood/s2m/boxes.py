"""Pure box and score-map math shared by the S2M prompters and the prompter training.

Score maps are (H,W) float (higher = more anomalous); boxes are xyxy float pixels with exclusive x1/y1 edges.
Nothing here holds state or touches torch. See docs/architecture.md.
"""
from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from ..errors import ConfigError

__all__ = ["check_map", "normalize_map", "box_iou_np", "nms_np", "points_for_box", "boxes_from_mask"]


def check_map(anomaly_map: Any) -> np.ndarray:
    """(H,W) float32 copy of a score map; non-finite values are replaced by the smallest finite one (0 if none).

    Raises ConfigError for a map that is not 2-D."""
    a = np.asarray(anomaly_map, dtype=np.float32)
    if a.ndim != 2:
        raise ConfigError(f"anomaly map must be (H,W), got shape {a.shape}")
    if not np.isfinite(a).all():
        finite = a[np.isfinite(a)]
        fill = float(finite.min()) if finite.size else 0.0
        a = np.where(np.isfinite(a), a, fill).astype(np.float32)
    return a


def normalize_map(anomaly_map: np.ndarray, lo: float | None = None, hi: float | None = None, smooth: float = 0.0,
                  clip: tuple[float, float] | None = (0.0, 1.0)) -> tuple[np.ndarray, float, float]:
    """Map raw scores to ``(a - lo) / (hi - lo)``.

    anomaly_map: (H,W) float (higher = more anomalous). lo/hi default to robust per-image values: lo = the
    median (most pixels are inliers), hi = the maximum of the map after Gaussian smoothing with ``smooth``
    pixels sigma (so a single hot pixel does not set the scale). Returns (normalised (H,W) float32, lo, hi);
    values are clipped to ``clip`` when given. A flat map (hi <= lo) gives zeros.
    """
    a = check_map(anomaly_map)
    s = cv2.GaussianBlur(a, (0, 0), smooth) if smooth > 0 else a
    lo = float(np.median(s)) if lo is None else float(lo)
    hi = float(s.max()) if hi is None else float(hi)
    if not hi > lo + 1e-8 * max(1.0, abs(hi)):
        return np.zeros_like(s), lo, hi
    n = (s - lo) / (hi - lo)
    if clip is not None:
        n = np.clip(n, clip[0], clip[1])
    return n.astype(np.float32), lo, hi


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes a (N,4) and b (M,4) -> (N,M) float64."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms_np(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS; returns kept indices sorted by descending score."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    ious = box_iou_np(boxes, boxes)
    for i in order:
        if all(ious[i, j] <= iou for j in keep):
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def points_for_box(norm_map: np.ndarray, box: np.ndarray, region: np.ndarray | None = None, n_pos: int = 1,
                   n_neg: int = 1, neg_level: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Point prompts for one box.

    norm_map: (H,W) float32 normalised scores in [0,1]. box: (4,) xyxy. region: optional (H,W) bool object
    pixels (positives are taken inside it, negatives outside it). Positives: successive maxima of the map
    inside the box/region, each suppressing a disc of radius max(2, 0.15 * short box side). Negatives: the
    lowest-score pixel (below ``neg_level``) of each box quadrant, lowest first. Missing points are padding.
    Returns coords (n_pos+n_neg, 2) float32 xy and labels (n_pos+n_neg,) int64.
    """
    h, w = norm_map.shape
    x0 = int(np.clip(math.floor(box[0]), 0, w - 1))
    y0 = int(np.clip(math.floor(box[1]), 0, h - 1))
    x1 = int(np.clip(math.ceil(box[2]), x0 + 1, w))
    y1 = int(np.clip(math.ceil(box[3]), y0 + 1, h))
    sub = norm_map[y0:y1, x0:x1]
    reg = region[y0:y1, x0:x1] if region is not None else np.ones_like(sub, dtype=bool)
    coords = np.zeros((n_pos + n_neg, 2), np.float32)
    labels = np.full(n_pos + n_neg, -1, np.int64)
    bh, bw = sub.shape
    yy, xx = np.mgrid[0:bh, 0:bw]
    cand = np.where(reg, sub, -np.inf)
    if not np.isfinite(cand).any():
        cand = sub.astype(np.float64).copy()
    cand = cand.astype(np.float64)
    radius = max(2.0, 0.15 * min(bh, bw))
    for k in range(n_pos):
        if not np.isfinite(cand).any():
            break
        iy, ix = np.unravel_index(int(np.argmax(cand)), cand.shape)
        coords[k] = (x0 + ix, y0 + iy)
        labels[k] = 1
        cand[(yy - iy) ** 2 + (xx - ix) ** 2 <= radius ** 2] = -np.inf
    if n_neg > 0:
        outside = ~reg if region is not None else np.ones_like(reg)
        low = np.where(outside & (sub < neg_level), sub, np.inf)
        picks = []
        my, mx = bh // 2, bw // 2
        for qy, qx in ((slice(0, max(my, 1)), slice(0, max(mx, 1))), (slice(0, max(my, 1)), slice(mx, bw)),
                       (slice(my, bh), slice(0, max(mx, 1))), (slice(my, bh), slice(mx, bw))):
            q = low[qy, qx]
            if q.size and np.isfinite(q).any():
                iy, ix = np.unravel_index(int(np.argmin(q)), q.shape)
                picks.append((float(q[iy, ix]), x0 + qx.start + ix, y0 + qy.start + iy))
        picks.sort()
        seen = set()
        k = n_pos
        for _, px, py in picks:
            if k >= n_pos + n_neg:
                break
            if (px, py) in seen:
                continue
            seen.add((px, py))
            coords[k] = (px, py)
            labels[k] = 0
            k += 1
    return coords, labels


def boxes_from_mask(mask: np.ndarray, min_area: int = 16) -> np.ndarray:
    """Exact xyxy boxes (N,4) float32 of the 8-connected components of a (H,W) bool mask with >= min_area px."""
    n, _, st, _ = cv2.connectedComponentsWithStats(np.asarray(mask, np.uint8), connectivity=8)
    out = [(x, y, x + w, y + h) for x, y, w, h, a in st[1:] if a >= min_area]
    return np.asarray(out, np.float32).reshape(-1, 4)
