"""S2M prompts: anomaly score map (H,W) -> box prompts + point prompts + a confidence per box.

Every prompter is a callable ``(anomaly_map (H,W) float, image (H,W,3) uint8 | None) -> Prompts``. This module
holds the shared output type :class:`Prompts` and the training-free :class:`PeakPrompter`: the map is
normalised per image, connected components are found at several levels of the normalised map, nested
components are merged across levels, and every kept component gives one box, positive points at its score
maxima and negative points at low-score pixels inside its box. The learned detector prompter lives in
:mod:`denseood.s2m.learned`, the box/map math in :mod:`denseood.s2m.boxes`; its training is
``denseood.train.prompter``. See docs/architecture.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from ..errors import ConfigError
from .boxes import check_map, nms_np, normalize_map, points_for_box

__all__ = ["Prompts", "PeakPrompter", "peak_confidence"]

# ----------------------------------------------------------------------------------------------------------
# the prompt container


@dataclass
class Prompts:
    """Prompts of one image.

    boxes: (N,4) float32 xyxy in image pixels (x1, y1 exclusive edges).
    confidence: (N,) float32 in [0,1], higher = more confident (PeakPrompter: normalised map value at the
        component's peak, see :func:`peak_confidence`; LearnedPrompter: the detector's probability
        sqrt(sigmoid(cls) * sigmoid(centerness))).
    points: (N,K,2) float32 xy pixel coordinates.
    point_labels: (N,K) int64, 1 = positive (object), 0 = negative (background), -1 = padding (ignore).
    """

    boxes: np.ndarray
    confidence: np.ndarray
    points: np.ndarray
    point_labels: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.confidence = np.asarray(self.confidence, np.float32).reshape(n)
        pts = np.asarray(self.points, np.float32)
        pl = np.asarray(self.point_labels, np.int64)
        k = pts.shape[1] if pts.ndim == 3 else (pts.size // max(2 * n, 1))
        self.points = pts.reshape(n, k, 2)
        self.point_labels = pl.reshape(n, pl.shape[1] if pl.ndim == 2 else k)
        if self.points.shape[1] != self.point_labels.shape[1]:
            raise ConfigError(f"Prompts: points {self.points.shape} and point_labels {self.point_labels.shape} disagree in K")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, k: int = 2) -> "Prompts":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, k, 2), np.float32),
                   np.zeros((0, k), np.int64))

    def select(self, idx: Sequence[int] | np.ndarray) -> "Prompts":
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        return Prompts(self.boxes[idx], self.confidence[idx], self.points[idx], self.point_labels[idx], dict(self.meta))

    def to_json(self) -> dict:
        return {"boxes": self.boxes.round(2).tolist(), "confidence": self.confidence.round(4).tolist(),
                "points": self.points.round(1).tolist(), "point_labels": self.point_labels.tolist()}


# ----------------------------------------------------------------------------------------------------------
# training-free prompter


def peak_confidence(norm_map: np.ndarray, region: np.ndarray) -> float:
    """Confidence in [0,1] of one component: the maximum of ``norm_map`` (H,W) float in [0,1] (the output of
    :func:`normalize_map`) over ``region`` (H,W) bool, i.e. ``clip((s_peak - lo) / (hi - lo), 0, 1)``. For fixed
    lo < hi this is non-decreasing in the component's (smoothed) raw peak ``s_peak``; 0 for an empty region."""
    return float(np.clip(norm_map[region].max(initial=0.0), 0.0, 1.0))


class PeakPrompter:
    """Training-free prompts from a multi-level component tree of the normalised anomaly map.

    levels: increasing levels of the normalised map (see :func:`normalize_map`; per image lo = median,
        hi = smoothed maximum unless ``lo``/``hi`` are fixed) at which connected components are taken.
    Merge rule across levels: components are nested (a component at a higher level lies inside exactly one at
    the level below). Starting from the lowest level, a component is kept whole (the outermost, most complete
    extent of the object) unless it splits into two or more components of at least ``min_area`` pixels at the
    next level, in which case it covers several objects and its children are examined instead. Boxes of the
    kept components are de-duplicated by box-IoU NMS (``nms_iou``) and capped at ``max_boxes``.
    Per-object extent: a weak object (peak well below the map's maximum) is cut by the global levels inside
    its own flanks, so each kept component is then grown to ``rel_level`` of its own peak (half maximum by
    default, never below ``floor``) unless that would swallow another kept component's peak or grow it more
    than ``max_grow`` times (``rel_level=None`` disables this).
    confidence (in [0,1]) = :func:`peak_confidence`: the normalised map value at the component's peak,
    ``clip((s_peak - lo) / (hi - lo), 0, 1)`` with ``s_peak`` the component's maximum of the smoothed map. It is
    a monotone (non-decreasing) map of the peak value for the image's lo/hi. With the default per-image lo/hi
    the image's strongest object gets 1.0, so confidences compare objects within an image; fix ``lo``/``hi``
    (e.g. for a calibrated score) to make them comparable across images. Boxes are NMS-ed in this order.
    min_peak: optional floor on the raw smoothed maximum of a map below which no prompts are produced (for
        maps known to be calibrated, e.g. JSD in nats); None disables it.
    """

    def __init__(self, levels: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9), min_area: int = 32, max_boxes: int = 20,
                 n_pos: int = 1, n_neg: int = 1, nms_iou: float = 0.7, smooth: float = 1.0,
                 lo: float | None = None, hi: float | None = None, min_peak: float | None = None,
                 rel_level: float | None = 0.5, floor: float = 0.2, max_grow: float = 4.0) -> None:
        levels = sorted(float(v) for v in levels)
        if not levels or levels[0] <= 0 or levels[-1] >= 1:
            raise ConfigError(f"PeakPrompter levels must lie in (0,1), got {levels}")
        self.levels = levels
        self.min_area = int(min_area)
        self.max_boxes = int(max_boxes)
        self.n_pos, self.n_neg = int(n_pos), int(n_neg)
        self.nms_iou = float(nms_iou)
        self.smooth = float(smooth)
        self.lo, self.hi = lo, hi
        self.min_peak = min_peak
        self.rel_level, self.floor, self.max_grow = rel_level, float(floor), float(max_grow)

    def _grow(self, n: np.ndarray, regions: list[np.ndarray]) -> list[np.ndarray]:
        """Extend each kept component to ``rel_level`` of its own peak (not below ``floor``) when that is lower
        than the level it was found at, unless the grown region swallows another kept component's peak or
        grows beyond ``max_grow`` times its area (then the component stays as found)."""
        peaks = [np.unravel_index(int(np.argmax(np.where(r, n, -1.0))), n.shape) for r in regions]
        cache: dict[float, np.ndarray] = {}
        out = []
        for i, (r, (py, px)) in enumerate(zip(regions, peaks)):
            t = round(max(self.rel_level * float(n[py, px]), self.floor), 3)
            if t >= float(n[r].min()):
                out.append(r)
                continue
            if t not in cache:
                cache[t] = cv2.connectedComponents((n >= t).astype(np.uint8), connectivity=8)[1]
            lab = cache[t]
            g = lab == lab[py, px]
            others = any(g[qy, qx] for j, (qy, qx) in enumerate(peaks) if j != i)
            out.append(r if others or g.sum() > self.max_grow * r.sum() else g)
        return out

    def __call__(self, anomaly_map: np.ndarray, image: np.ndarray | None = None) -> Prompts:
        """anomaly_map: (H,W) float raw scores; image unused. Returns :class:`Prompts`."""
        a = check_map(anomaly_map)
        k = self.n_pos + self.n_neg
        n, lo, hi = normalize_map(a, self.lo, self.hi, smooth=self.smooth)
        if self.min_peak is not None and hi < self.min_peak:
            return Prompts.empty(k)
        if not n.any():
            return Prompts.empty(k)
        labs, stats = [], []
        for t in self.levels:
            _, lab, st, _ = cv2.connectedComponentsWithStats((n >= t).astype(np.uint8), connectivity=8)
            labs.append(lab)
            stats.append(st)
        # children[i][c] = components at level i+1 inside component c of level i (area >= min_area)
        children: list[dict[int, list[int]]] = []
        for i in range(len(self.levels) - 1):
            up, cur = labs[i + 1], labs[i]
            m = up > 0
            pairs = np.unique(up[m].astype(np.int64) * (cur.max() + 1) + cur[m])
            d: dict[int, list[int]] = {}
            for p in pairs:
                child, parent = divmod(int(p), int(cur.max()) + 1)
                if stats[i + 1][child, cv2.CC_STAT_AREA] >= self.min_area:
                    d.setdefault(parent, []).append(child)
            children.append(d)

        def select(level: int, c: int) -> list[tuple[int, int]]:
            kids = children[level].get(c, []) if level < len(children) else []
            if len(kids) >= 2:
                out: list[tuple[int, int]] = []
                for kc in kids:
                    out += select(level + 1, kc)
                return out
            return [(level, c)]

        chosen: list[tuple[int, int]] = []
        for c in range(1, len(stats[0])):
            if stats[0][c, cv2.CC_STAT_AREA] >= self.min_area:
                chosen += select(0, c)
        if not chosen:
            return Prompts.empty(k)
        regions = [labs[level] == c for level, c in chosen]
        if self.rel_level:
            regions = self._grow(n, regions)
        boxes, conf = [], []
        for reg in regions:
            ys, xs = np.nonzero(reg.any(1))[0], np.nonzero(reg.any(0))[0]
            boxes.append((xs[0], ys[0], xs[-1] + 1, ys[-1] + 1))
            conf.append(peak_confidence(n, reg))
        boxes_a = np.asarray(boxes, np.float32)
        conf_a = np.asarray(conf, np.float32)
        keep = nms_np(boxes_a, conf_a, self.nms_iou)[: self.max_boxes]
        pts = np.zeros((len(keep), k, 2), np.float32)
        pl = np.full((len(keep), k), -1, np.int64)
        for j, i in enumerate(keep):
            pts[j], pl[j] = points_for_box(n, boxes_a[i], regions[i], self.n_pos, self.n_neg)
        return Prompts(boxes_a[keep], conf_a[keep], pts, pl, {"prompter": "peak", "lo": lo, "hi": hi})

