"""Point-prompted objects (UGainS-style): anomaly map (H,W) -> one positive point prompt per sampled pixel.

Rules follow kumuji/ugains (``ugains/models/sampler.py``: ``NLSSampler``; ``ugains/models/sam_sampling.py``:
``Segmentation.forward`` / ``test_step``; constants from ``ugains/conf/model/sam_sampling.yaml``):

- candidates: the pixels whose raw anomaly score is ``>=`` the ``quantile`` of the image's map (UGainS takes a
  fixed threshold on its NLS score, ``uncertainty_thresh: -0.15``; a per-image quantile makes the rule
  score-agnostic: denseood's maps have no common scale);
- farthest-point sampling of ``n_points`` (UGainS ``num_samples: 50``) among the candidates' (x, y) positions,
  starting from the first candidate in row-major order, as pointnet2's ``furthest_point_sample`` starts from
  index 0 of UGainS' ``torch.nonzero`` list;
- each point is ONE positive prompt (UGainS label 1, no box, no negative points); SAM runs with
  ``multimask_output=True`` and keeps the mask with the highest predicted IoU (``iou_predictions.max(1)``);
- masks are de-duplicated by greedy mask NMS at IoU 0.7 (UGainS ``nms_thresh: 0.7``) in descending confidence;
- confidence of a mask = the mean NORMALISED anomaly score inside it (:func:`mask_confidence`; UGainS ranks by
  the mean raw NLS score, which lies in [-1, 0]; the normalisation puts any score in [0, 1]).

Where the quantile falls inside the inliers' noise (objects smaller than 1 - Q of the frame), the points spread
over that noise too: those masks get low confidences, but an object smaller than the point spacing (about
sqrt(candidate area / N)) can get no point; raise Q or N for small objects.

GrabCut needs a rectangle, which a single point does not give: the prompt's box is the bounding box of the
candidates' 8-connected component that holds the point (:func:`point_window`), so GrabCut is seeded at the point
(a definite-foreground disc) inside the region the point was sampled from. SAM ignores that box
(``Prompts.meta["point_only"]``). See docs/architecture.md.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ..errors import ConfigError
from .boxes import check_map, normalize_map
from .prompts import Prompts

__all__ = ["PointPrompter", "farthest_points", "point_window", "mask_confidence", "parse_points_spec",
           "N_POINTS", "QUANTILE", "NMS_IOU"]

#: points per image: ``num_samples: 50`` in ugains/conf/model/sam_sampling.yaml
N_POINTS = 50
#: candidate pixels = score >= this per-image quantile (ours: the top 5 % of pixels; UGainS uses a fixed NLS
#: threshold of -0.15 instead, which does not carry over to other scores)
QUANTILE = 0.95
#: mask-NMS IoU: ``nms_thresh: 0.7`` in ugains/conf/model/sam_sampling.yaml (``batched_mask_nms``)
NMS_IOU = 0.7
#: smallest side (pixels) of a GrabCut window around a point (ours: a one-pixel component still gives GrabCut
#: some foreground to model)
MIN_WINDOW = 16
#: Gaussian sigma (pixels) of the smoothing behind the normalisation's upper end (as :class:`PeakPrompter`)
SMOOTH = 1.0


def check_settings(n_points: Any, quantile: Any) -> tuple[int, float]:
    """(n_points, quantile) validated: an integer n_points > 0 and a quantile strictly inside (0, 1);
    ConfigError (one line, naming the value) otherwise."""
    try:
        n = int(n_points)
        ok_n = float(n_points) == n and n > 0
    except (TypeError, ValueError):
        ok_n = False
    if not ok_n:
        raise ConfigError(f"--prompter points: the number of points must be an integer > 0, got {n_points!r} "
                          f"(e.g. points:{N_POINTS})")
    try:
        q = float(quantile)
    except (TypeError, ValueError):
        q = float("nan")
    if not 0.0 < q < 1.0:
        raise ConfigError(f"--prompter points: the score quantile must lie strictly between 0 and 1, got "
                          f"{quantile!r} (e.g. points:{N_POINTS}:{QUANTILE})")
    return n, q


def parse_points_spec(spec: str) -> tuple[int, float]:
    """"points" | "points:N" | "points:N:Q" -> (N, Q) validated by :func:`check_settings` (defaults
    :data:`N_POINTS`, :data:`QUANTILE`)."""
    parts = str(spec).split(":")
    if parts[0] != "points" or len(parts) > 3 or any(p == "" for p in parts[1:]):
        raise ConfigError(f"bad --prompter {spec!r}: write points, points:N or points:N:Q "
                          f"(e.g. points:{N_POINTS}:{QUANTILE})")
    n = parts[1] if len(parts) > 1 else N_POINTS
    q = parts[2] if len(parts) > 2 else QUANTILE
    return check_settings(n, q)


def farthest_points(coords: np.ndarray, n: int) -> np.ndarray:
    """Farthest-point sampling: (M,2) float xy -> (min(n, M),) int64 indices into ``coords``.

    Starts at index 0; each next point maximises the Euclidean distance to the points chosen so far (ties: the
    lowest index), as pointnet2's ``furthest_point_sample``."""
    c = np.asarray(coords, np.float64).reshape(-1, 2)
    m = min(int(n), len(c))
    if m <= 0:
        return np.zeros(0, np.int64)
    out = np.zeros(m, np.int64)
    dist = np.full(len(c), np.inf)
    last = 0
    for j in range(1, m):
        d = np.sum((c - c[last]) ** 2, axis=1)
        np.minimum(dist, d, out=dist)
        last = int(np.argmax(dist))
        out[j] = last
    return out


def point_window(labels: np.ndarray, stats: np.ndarray, x: int, y: int, min_side: int = MIN_WINDOW) -> np.ndarray:
    """(4,) float32 xyxy box (exclusive ends) for the point (x, y): the bounding box of its component in
    ``labels`` (H,W) int32 (``stats`` from ``cv2.connectedComponentsWithStats``), widened about its centre to at
    least ``min_side`` pixels per side, clipped to the image."""
    h, w = labels.shape
    st = stats[int(labels[y, x])]
    x0, y0 = float(st[cv2.CC_STAT_LEFT]), float(st[cv2.CC_STAT_TOP])
    x1, y1 = x0 + st[cv2.CC_STAT_WIDTH], y0 + st[cv2.CC_STAT_HEIGHT]
    if x1 - x0 < min_side:
        cx = (x0 + x1) / 2
        x0, x1 = cx - min_side / 2, cx + min_side / 2
    if y1 - y0 < min_side:
        cy = (y0 + y1) / 2
        y0, y1 = cy - min_side / 2, cy + min_side / 2
    return np.array([max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)], np.float32)


def mask_confidence(anomaly_map: np.ndarray, masks: np.ndarray, smooth: float = SMOOTH) -> np.ndarray:
    """(N,) float32 in [0,1]: the mean of the normalised map (:func:`normalize_map`, per-image lo = median,
    hi = smoothed maximum, clipped to [0,1]) inside each of ``masks`` (N,H,W) bool; 0 for an empty mask."""
    n, _, _ = normalize_map(anomaly_map, smooth=smooth)
    out = np.zeros(len(masks), np.float32)
    for i, m in enumerate(masks):
        if m.any():
            out[i] = float(np.clip(n[m].mean(), 0.0, 1.0))
    return out


class PointPrompter:
    """UGainS-style point prompts (module docstring): ``n_points`` farthest points among the pixels at or above
    the map's ``quantile``, one positive point per prompt.

    Settings are validated here (:func:`check_settings`). ``mask_nms_iou`` (0.7, UGainS) is the mask-NMS IoU
    :func:`build_s2m` gives S2M for this prompter; :meth:`mask_confidence` replaces the prompt confidence by the
    mean normalised score inside each mask once the masks exist, and S2M orders and NMS-es by it.
    """

    point_only = True

    def __init__(self, n_points: int = N_POINTS, quantile: float = QUANTILE, nms_iou: float = NMS_IOU,
                 smooth: float = SMOOTH) -> None:
        self.n_points, self.quantile = check_settings(n_points, quantile)
        if not 0.0 < float(nms_iou) <= 1.0:
            raise ConfigError(f"PointPrompter nms_iou must be in (0, 1], got {nms_iou!r}")
        self.mask_nms_iou = float(nms_iou)
        self.smooth = float(smooth)

    @classmethod
    def from_spec(cls, spec: str) -> "PointPrompter":
        """"points" | "points:N" | "points:N:Q" (see :func:`parse_points_spec`)."""
        n, q = parse_points_spec(spec)
        return cls(n, q)

    def __call__(self, anomaly_map: np.ndarray, image: np.ndarray | None = None) -> Prompts:
        """anomaly_map: (H,W) float raw scores; image unused. Returns :class:`Prompts` with K = 1 point per
        prompt (label 1), boxes = :func:`point_window`, confidence = the normalised score at the point, and
        ``meta["point_only"] = True``. Empty for a flat map."""
        a = check_map(anomaly_map)
        n, lo, hi = normalize_map(a, smooth=self.smooth)
        meta = {"prompter": "points", "point_only": True, "lo": lo, "hi": hi}
        if not n.any():
            return Prompts(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 1, 2)), np.zeros((0, 1)), meta)
        level = float(np.quantile(a, self.quantile))
        cand = a >= level
        ys, xs = np.nonzero(cand)   # row-major, as torch.nonzero
        pick = farthest_points(np.stack([xs, ys], 1), self.n_points)
        px, py = xs[pick], ys[pick]
        _, labels, stats, _ = cv2.connectedComponentsWithStats(cand.astype(np.uint8), connectivity=8)
        boxes = np.stack([point_window(labels, stats, int(x), int(y)) for x, y in zip(px, py)])
        pts = np.stack([px, py], 1).astype(np.float32)[:, None, :]   # integer pixel xy, as UGainS
        conf = n[py, px].astype(np.float32)
        return Prompts(boxes, conf, pts, np.ones((len(pick), 1), np.int64), dict(meta, level=level))

    def mask_confidence(self, anomaly_map: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """(N,) float32 in [0,1]: :func:`mask_confidence` of ``masks`` (N,H,W) bool on ``anomaly_map`` (H,W)."""
        return mask_confidence(anomaly_map, masks, self.smooth)
