"""Instance AP of OOD objects under two protocols: ``"oodis"`` (the OoDIS benchmark's scorer) and ``"coco"``.

Each ground-truth anomaly instance is one object (the dataset's instance ids where present, else connected
components of the anomaly mask); every prediction is a full mask with a confidence. ``InstanceAP`` validates
the inputs and dispatches by protocol:

* ``"oodis"`` (the headline of every object row): the numbers the OoDIS scorer gives for the same instances;
  the rules are in :mod:`denseood.eval.instance_ap_oodis`, checked against the official scorer run offline
  (tools/oodis_reference.py) in tests/eval/test_instance_ap_oodis.py.
* ``"coco"``: COCO mask AP (this module), equal to pycocotools' ``COCOeval`` for one category with area range
  ``[min_size, inf)`` and ``max_dets`` detections per image. Void pixels are removed from the predicted masks
  before any IoU; per image, predictions sorted by score (stable), each IoU threshold t in 0.50:0.05:0.95
  matches every prediction to the unmatched ground truth of highest IoU >= t (non-ignored ground truth
  first); ground truth with fewer than ``min_size`` valid pixels is *ignored* (a match to it counts neither
  way), and so is an unmatched prediction that small; precision is made monotone and sampled at the 101
  recall points 0:0.01:1. Checked against pycocotools in tests/eval/test_instance_ap.py.

``ap`` is the mean over the ten IoU thresholds, ``ap50`` the value at 0.5. See docs/metrics.md and
docs/architecture.md.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import dist
from ..errors import ConfigError
from . import instance_ap_oodis as oodis

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


PROTOCOLS = ("oodis", "coco")


class InstanceAP:
    """Streaming instance AP of OOD objects over images; ``compute()`` is collective under DDP.

    protocol: "oodis" (the OoDIS scorer) or "coco" (pycocotools). min_size: ground-truth instances with fewer
    (non-void) pixels are ignored (OoDIS: 10); under "coco" an unmatched prediction that small is ignored too.
    max_dets: "coco" only, predictions kept per image, highest scores first (default COCO's 100); OoDIS has no
    cap.
    """

    def __init__(self, protocol: str = "oodis", min_size: int = 10, max_dets: int | None = None):
        if protocol not in PROTOCOLS:
            raise ConfigError(f"InstanceAP(protocol={protocol!r}): choose one of {', '.join(PROTOCOLS)}")
        if protocol == "oodis" and max_dets is not None:
            raise ConfigError(f"InstanceAP(protocol='oodis', max_dets={max_dets}): OoDIS keeps every prediction; "
                              "drop max_dets or use protocol='coco'")
        max_dets = 100 if max_dets is None else max_dets
        if min_size < 0 or max_dets < 1:
            raise ConfigError(f"InstanceAP(min_size={min_size}, max_dets={max_dets}): need min_size >= 0, max_dets >= 1")
        self.protocol, self.min_size, self.max_dets = protocol, int(min_size), int(max_dets)
        self.thresholds = oodis.IOU_THRESHOLDS if protocol == "oodis" else IOU_THRESHOLDS
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated images."""
        self._scores: list[np.ndarray] = []
        self._first: list[np.ndarray] = []  # coco: matched; oodis: true positives   (T,N) bool each
        self._second: list[np.ndarray] = []  # coco: ignored; oodis: false positives
        self._n_gt = 0
        self._n_pred = 0

    def update(self, pred_masks: np.ndarray, scores: np.ndarray, gt_instances: np.ndarray, void: np.ndarray) -> None:
        """One image. pred_masks: (N,H,W) bool full masks (void not removed); scores: (N,) finite float;
        gt_instances: (H,W) int, 0 = no anomaly, each other id one instance; void: (H,W) bool."""
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
        void = np.asarray(void, bool)
        if void.shape != gt_instances.shape:
            raise ConfigError(f"InstanceAP.update: void {void.shape} and gt_instances {gt_instances.shape} differ")
        (self._update_oodis if self.protocol == "oodis" else self._update_coco)(pred_masks, scores, gt_instances,
                                                                                 void)

    def _update_oodis(self, pred_masks: np.ndarray, scores: np.ndarray, gt: np.ndarray, void: np.ndarray) -> None:
        labels, n_gt = oodis.relabel(gt, void)
        inter, pred_area, gt_area, void_inter = oodis.overlaps(pred_masks, labels, n_gt, void)
        tp, fp = oodis.classify(inter, pred_area, gt_area, void_inter, scores, self.min_size, self.thresholds)
        self._append(scores, tp, fp, int((gt_area >= self.min_size).sum()), int((pred_area > 0).sum()))

    def _update_coco(self, pred_masks: np.ndarray, scores: np.ndarray, gt: np.ndarray, void: np.ndarray) -> None:
        labels, n_gt = oodis.relabel(gt, void)  # the same relabelling: void removed, ids 1..K
        keep = ~void
        order = np.argsort(-scores, kind="mergesort")[: self.max_dets]
        masks = pred_masks[order] & keep
        gt_area = np.bincount(labels.ravel(), minlength=n_gt + 1)[1:]
        gt_ignore = gt_area < self.min_size
        matched, ignored = match_image(mask_ious(masks, labels, n_gt), gt_ignore,
                                       masks.sum(axis=(1, 2)) < self.min_size)
        self._append(scores[order], matched, ignored, int((~gt_ignore).sum()), len(order))

    def _append(self, scores: np.ndarray, first: np.ndarray, second: np.ndarray, n_gt: int, n_pred: int) -> None:
        self._scores.append(scores)
        self._first.append(first)
        self._second.append(second)
        self._n_gt += n_gt
        self._n_pred += n_pred

    def compute(self) -> dict[str, Any]:
        """protocol, ap (mean over the 10 IoU thresholds), ap50, ap75, ap_per_iou (10 values), n_gt (non-ignored
        ground truth), n_pred (oodis: non-empty predictions; coco: kept predictions). AP in [0, 1], NaN
        without ground truth (so with no image at all: every AP NaN, n_gt = n_pred = 0)."""
        parts = dist.gather((self._scores, self._first, self._second, self._n_gt, self._n_pred))
        t_n = len(self.thresholds)
        cat = (lambda xs: np.concatenate(xs, axis=-1) if xs else np.zeros((t_n, 0), bool))
        scores = [s for p in parts for s in p[0]]
        scores = np.concatenate(scores) if scores else np.zeros(0)
        first, second = cat([m for p in parts for m in p[1]]), cat([i for p in parts for i in p[2]])
        n_gt = sum(p[3] for p in parts)
        fn = oodis.average_precision if self.protocol == "oodis" else average_precision
        ap = fn(scores, first, second, n_gt)
        mean = float(np.mean(ap)) if n_gt else float("nan")
        return {"protocol": self.protocol, "ap": mean, "ap50": float(ap[0]), "ap75": float(ap[5]),
                "ap_per_iou": [float(v) for v in ap], "n_gt": n_gt, "n_pred": sum(p[4] for p in parts)}


class InstanceAPReport:
    """Instance AP under both protocols from one stream of updates; ``compute()`` (collective under DDP) gives
    ``{"oodis": {...}, "coco": {...}}``, each :meth:`InstanceAP.compute`'s dict (with its ``protocol``); OoDIS
    is the headline of every object row (docs/metrics.md)."""

    def __init__(self, min_size: int = 10):
        self.parts = {p: InstanceAP(protocol=p, min_size=min_size) for p in PROTOCOLS}

    def reset(self) -> None:
        """Forget all accumulated images."""
        for m in self.parts.values():
            m.reset()

    def update(self, pred_masks: np.ndarray, scores: np.ndarray, gt_instances: np.ndarray, void: np.ndarray) -> None:
        """One image; arguments as :meth:`InstanceAP.update`."""
        for m in self.parts.values():
            m.update(pred_masks, scores, gt_instances, void)

    def compute(self) -> dict[str, dict[str, Any]]:
        """{"oodis": ..., "coco": ...}."""
        return {p: m.compute() for p, m in self.parts.items()}
