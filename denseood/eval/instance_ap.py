"""COCO-style mask AP for OOD object instances (as the instance-level OOD benchmarks score them).

Each ground-truth anomaly instance is one object (the dataset's instance ids where present, else connected
components of the anomaly mask); every prediction is a mask with a confidence. Void pixels are removed from
the predicted masks before any IoU, so a prediction is neither rewarded nor punished on void. Matching and
averaging follow pycocotools' ``COCOeval`` for one category with area range ``[min_size, inf)`` and
``max_dets`` detections per image:

* per image, predictions sorted by score (stable), each IoU threshold t in 0.50:0.05:0.95 matches every
  prediction to the unmatched ground truth of highest IoU >= t (non-ignored ground truth first);
* ground truth with fewer than ``min_size`` valid pixels is *ignored*: a prediction matched to it counts
  neither as true nor as false positive; an unmatched prediction smaller than ``min_size`` is ignored too;
* precision is made monotone and sampled at the 101 recall points 0:0.01:1; AP is their mean, averaged over
  the IoU thresholds (``ap``), or at t = 0.5 alone (``ap50``).

Checked against pycocotools on random instance sets in tests/eval/test_instance_ap.py. See
docs/architecture.md.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import dist
from ..errors import ConfigError

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def mask_ious(pred_masks: np.ndarray, gt_labels: np.ndarray, n_gt: int) -> np.ndarray:
    """IoU of every predicted mask with every ground-truth instance.

    pred_masks: (N,H,W) bool (void already removed); gt_labels: (H,W) int, 0 = none, 1..n_gt instances.
    Returns (N, n_gt) float64.
    """
    gt_area = np.bincount(gt_labels.ravel(), minlength=n_gt + 1)[1:].astype(np.float64)
    ious = np.zeros((len(pred_masks), n_gt), np.float64)
    for i, m in enumerate(pred_masks):
        inter = np.bincount(gt_labels[m], minlength=n_gt + 1)[1:].astype(np.float64)
        union = m.sum() + gt_area - inter
        np.divide(inter, union, out=ious[i], where=union > 0)
    return ious


def match_image(ious: np.ndarray, gt_ignore: np.ndarray, pred_small: np.ndarray,
                thresholds: np.ndarray = IOU_THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """COCO greedy matching of one image's predictions (already sorted by score, best first).

    ious: (N,G); gt_ignore: (G,) bool; pred_small: (N,) bool (area below the range).
    Returns ``matched`` (T,N) bool and ``ignored`` (T,N) bool.
    """
    n, g = ious.shape
    order = np.argsort(gt_ignore, kind="mergesort")  # non-ignored ground truth first, as COCOeval sorts it
    ious, gt_ignore = ious[:, order], gt_ignore[order]
    t_n = len(thresholds)
    matched = np.zeros((t_n, n), bool)
    ignored = np.zeros((t_n, n), bool)
    for ti, t in enumerate(thresholds):
        taken = np.zeros(g, bool)
        for d in range(n):
            best, m = min(float(t), 1 - 1e-10), -1
            for j in range(g):
                if taken[j]:
                    continue
                if m > -1 and not gt_ignore[m] and gt_ignore[j]:
                    break
                if ious[d, j] < best:
                    continue
                best, m = ious[d, j], j
            if m == -1:
                continue
            taken[m] = True
            matched[ti, d] = True
            ignored[ti, d] = gt_ignore[m]
        ignored[ti] |= ~matched[ti] & pred_small
    return matched, ignored


def average_precision(scores: np.ndarray, matched: np.ndarray, ignored: np.ndarray, n_gt: int) -> np.ndarray:
    """AP per IoU threshold from pooled detections (COCOeval.accumulate for one category and area range).

    scores: (D,) in image order; matched, ignored: (T,D) bool; n_gt: non-ignored ground-truth instances.
    Returns (T,) float64; NaN where n_gt == 0.
    """
    t_n = matched.shape[0]
    if n_gt == 0:
        return np.full(t_n, np.nan)
    order = np.argsort(-scores, kind="mergesort")
    m, ig = matched[:, order], ignored[:, order]
    tps = np.cumsum(m & ~ig, axis=1, dtype=np.float64)
    fps = np.cumsum(~m & ~ig, axis=1, dtype=np.float64)
    out = np.zeros(t_n)
    for ti in range(t_n):
        tp, fp = tps[ti], fps[ti]
        rc = tp / n_gt
        pr = tp / (tp + fp + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
        idx = np.searchsorted(rc, RECALL_POINTS, side="left")
        q = np.zeros(len(RECALL_POINTS))
        ok = idx < len(pr)
        q[ok] = pr[idx[ok]]
        out[ti] = q.mean()
    return out


class InstanceAP:
    """Streaming COCO mask AP of OOD instances over images; ``compute()`` is collective under DDP.

    min_size: ground-truth instances (and unmatched predictions) with fewer valid pixels are ignored (OoDIS
    uses 10). max_dets: predictions kept per image, highest scores first (COCO's 100).
    """

    def __init__(self, min_size: int = 10, max_dets: int = 100):
        if min_size < 0 or max_dets < 1:
            raise ConfigError(f"InstanceAP(min_size={min_size}, max_dets={max_dets}): need min_size >= 0, max_dets >= 1")
        self.min_size, self.max_dets = int(min_size), int(max_dets)
        self.reset()

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []
        self._matched: list[np.ndarray] = []
        self._ignored: list[np.ndarray] = []
        self._n_gt = 0
        self._n_pred = 0

    def update(self, pred_masks: np.ndarray, scores: np.ndarray, gt_instances: np.ndarray, void: np.ndarray) -> None:
        """One image. pred_masks: (N,H,W) bool; scores: (N,) float; gt_instances: (H,W) int, 0 = no anomaly,
        each other id one instance; void: (H,W) bool (excluded from masks and instances)."""
        pred_masks = np.asarray(pred_masks, bool).reshape(-1, *np.shape(gt_instances))
        scores = np.asarray(scores, np.float64).reshape(-1)
        if len(scores) != len(pred_masks):
            raise ConfigError(f"InstanceAP.update: {len(pred_masks)} masks but {len(scores)} scores")
        if not np.isfinite(scores).all():
            raise ConfigError("InstanceAP.update: object scores must be finite")
        gt_instances = np.asarray(gt_instances)
        if gt_instances.ndim != 2 or not np.issubdtype(gt_instances.dtype, np.integer) or (gt_instances < 0).any():
            raise ConfigError(f"InstanceAP.update: gt_instances must be an (H,W) non-negative integer map, got "
                              f"{gt_instances.shape} {gt_instances.dtype}")
        keep = ~np.asarray(void, bool)
        ids, gt_labels = np.unique(np.where(keep, gt_instances, 0), return_inverse=True)
        gt_labels = gt_labels.reshape(keep.shape)
        if ids[0] != 0:  # no background pixel at all: shift so that label 0 stays "none"
            gt_labels = gt_labels + 1
        n_gt = int(gt_labels.max())
        order = np.argsort(-scores, kind="mergesort")[: self.max_dets]
        masks = pred_masks[order] & keep
        gt_area = np.bincount(gt_labels.ravel(), minlength=n_gt + 1)[1:]
        gt_ignore = gt_area < self.min_size
        matched, ignored = match_image(mask_ious(masks, gt_labels, n_gt), gt_ignore,
                                       masks.sum(axis=(1, 2)) < self.min_size)
        self._scores.append(scores[order])
        self._matched.append(matched)
        self._ignored.append(ignored)
        self._n_gt += int((~gt_ignore).sum())
        self._n_pred += len(order)

    def compute(self) -> dict[str, Any]:
        """ap (mean over IoU 0.50:0.95), ap50, ap75, ap_per_iou (10 values), n_gt (non-ignored), n_pred."""
        parts = dist.gather((self._scores, self._matched, self._ignored, self._n_gt, self._n_pred))
        scores = [s for p in parts for s in p[0]]
        t_n = len(IOU_THRESHOLDS)
        cat = (lambda xs: np.concatenate(xs, axis=-1) if xs else np.zeros((t_n, 0), bool))
        n_gt = sum(p[3] for p in parts)
        ap = average_precision(np.concatenate(scores) if scores else np.zeros(0),
                               cat([m for p in parts for m in p[1]]), cat([i for p in parts for i in p[2]]), n_gt)
        return {"ap": float(np.mean(ap)), "ap50": float(ap[0]), "ap75": float(ap[5]),
                "ap_per_iou": [float(v) for v in ap], "n_gt": n_gt, "n_pred": sum(p[4] for p in parts)}
