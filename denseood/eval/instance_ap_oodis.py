"""OoDIS instance AP: the rules of the OoDIS scorer (Cityscapes instance-level evaluation, one class), as pure
functions over one image's overlap counts and the pooled detections.

Conventions (docs/metrics.md, "OoDIS instance AP"): predicted masks are full masks (void pixels stay in the
prediction's area); ground-truth instances have void removed; a ground-truth instance with fewer than
``min_size`` pixels is *small*. At each IoU threshold t of :data:`IOU_THRESHOLDS`:

* a prediction matches a ground-truth instance when their IoU is strictly greater than t (for t >= 0.5 a
  prediction matches at most one instance); of several predictions matching one non-small instance the
  highest-scoring one is the true positive and the others are false positives;
* a prediction that matches a small instance is neither true nor false positive; an unmatched prediction is a
  false positive unless (its void pixels + its pixels on small instances) / its area is greater than t;
* an empty prediction does not exist; non-small instances without a match are false negatives.

AP at t is the trapezoid rule over the precision/recall points of all distinct scores (highest first) after
the point (recall 0, precision 1), with no monotone envelope, no recall sampling and no detection cap.
See docs/architecture.md.
"""
from __future__ import annotations

import numpy as np

#: the scorer's IoU thresholds, bit for bit (``numpy.arange(0.5, 1.0, 0.05)``): matches compare with ``>``
IOU_THRESHOLDS = np.arange(0.5, 1.0, 0.05)


def relabel(gt_instances: np.ndarray, void: np.ndarray) -> tuple[np.ndarray, int]:
    """Ground-truth ids to 1..K (ascending id order) with void pixels set to 0.

    gt_instances: (H,W) int >= 0, 0 = none; void: (H,W) bool. Returns ((H,W) int64 labels, K).
    """
    ids, inv = np.unique(np.where(void, 0, gt_instances), return_inverse=True)
    lab = inv.reshape(gt_instances.shape).astype(np.int64)
    if ids[0] != 0:  # no "none" pixel at all: ids start at 1 already after shifting
        lab += 1
    return lab, int(lab.max())


def overlaps(pred_masks: np.ndarray, labels: np.ndarray, n_gt: int,
             void: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts of one image.

    pred_masks: (N,H,W) bool full masks; labels: (H,W) int 0..n_gt (void already 0); void: (H,W) bool.
    Returns inter (N,n_gt) int64, pred_area (N,) int64, gt_area (n_gt,) int64, void_inter (N,) int64.
    """
    gt_area = np.bincount(labels.ravel(), minlength=n_gt + 1)[1:].astype(np.int64)
    inter = np.zeros((len(pred_masks), n_gt), np.int64)
    pred_area = np.zeros(len(pred_masks), np.int64)
    void_inter = np.zeros(len(pred_masks), np.int64)
    for i, m in enumerate(pred_masks):
        inter[i] = np.bincount(labels[m], minlength=n_gt + 1)[1:]
        pred_area[i] = np.count_nonzero(m)
        void_inter[i] = np.count_nonzero(m & void)
    return inter, pred_area, gt_area, void_inter


def classify(inter: np.ndarray, pred_area: np.ndarray, gt_area: np.ndarray, void_inter: np.ndarray,
             scores: np.ndarray, min_size: int,
             thresholds: np.ndarray = IOU_THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives of one image's predictions at each threshold (rules in the module docstring).

    inter (N,K), pred_area (N,), gt_area (K,), void_inter (N,): from :func:`overlaps`; scores: (N,) float.
    Returns tp (T,N) bool, fp (T,N) bool (a prediction that is neither is ignored at that threshold).
    """
    n, k = inter.shape
    union = gt_area[None, :] + pred_area[:, None] - inter
    iou = np.zeros((n, k), np.float64)
    np.divide(inter, union, out=iou, where=union > 0)
    big = gt_area >= min_size
    exists = pred_area > 0
    ignore = np.zeros(n, np.float64)
    np.divide(void_inter + inter[:, ~big].sum(axis=1), pred_area, out=ignore, where=exists)
    tp = np.zeros((len(thresholds), n), bool)
    fp = np.zeros((len(thresholds), n), bool)
    if n == 0:
        return tp, fp
    for ti, t in enumerate(thresholds):
        hit = (iou > t) & exists[:, None]
        on_big = hit[:, big]
        ranked = np.where(on_big, scores[:, None], -np.inf)
        best = np.argmax(ranked, axis=0)[on_big.any(axis=0)]
        tp[ti, best] = True
        fp[ti] = (on_big.any(axis=1) & ~tp[ti]) | (exists & ~hit.any(axis=1) & (ignore <= t))
    return tp, fp


def average_precision(scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, n_gt: int) -> np.ndarray:
    """AP per threshold from the pooled detections of all images.

    scores: (D,) float; tp, fp: (T,D) bool; n_gt: non-small ground-truth instances of all images.
    Returns (T,) float64 in [0, 1]; NaN where n_gt == 0; 0 at a threshold without any true or false positive
    (the official scorer raises there; docs/metrics.md).
    """
    out = np.full(tp.shape[0], np.nan)
    if n_gt == 0:
        return out
    for ti in range(tp.shape[0]):
        keep = tp[ti] | fp[ti]
        levels, inv = np.unique(scores[keep], return_inverse=True)
        n_tp = np.cumsum(np.bincount(inv, weights=tp[ti][keep], minlength=len(levels))[::-1])
        n_all = np.cumsum(np.bincount(inv, minlength=len(levels))[::-1])
        recall = np.concatenate([[0.0], n_tp / n_gt])
        precision = np.concatenate([[1.0], n_tp / np.maximum(n_all, 1)])
        out[ti] = float(np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2))
    return out
