"""The S2M paper's object protocol: IoU and Dice of thresholded object-score maps over a threshold grid.

Input per image is an *object score map*: every predicted mask painted with its object score in [0, 1]
(:func:`paint_objects`; where masks overlap a pixel takes the highest score, while the S2M code lets the
later mask win). Ground truth is ``ood_mask == 1``; void (255) counts as background, as in that code. For
every t in ``np.arange(0, 1 + step, step)`` (compared in float32, as the S2M code's torch tensors do):
prediction = map > t; per image IoU = I/U and Dice = 2I/(I+U), both 0 for an image whose union is empty;
both averaged over images. Reported: ``best_iou`` (the first maximum over t; 0 and t = 0 when every IoU
is 0), ``best_threshold``, ``au_iou`` (trapezoid of the IoU curve over t) and ``mean_f1`` (mean over t of
the image-averaged Dice). This is what ``tools/inference.py`` (``get_iou``) of WenjieZhao1/S2M computes.
See docs/architecture.md.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import dist
from ..errors import ConfigError


def threshold_grid(step: float) -> np.ndarray:
    """``np.arange(0, 1 + step, step)`` as float32 (the S2M code's grid, compared in float32)."""
    if not 0 < step <= 1:
        raise ConfigError(f"object-curve step must be in (0, 1], got {step}")
    return np.arange(0, 1 + step, step).astype(np.float32)


def paint_objects(pred_instances: Any, scores: Any, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Object score map (H,W) float32: each object's pixels carry its score, 0 elsewhere.

    pred_instances: (H,W) int label map with ids 1..N (id i has ``scores[i-1]``) or (N,H,W) bool masks;
    scores: (N,) in [0, 1]. Overlapping masks: a pixel takes the highest score.
    """
    scores = np.asarray(scores, np.float32).reshape(-1)
    if not np.isfinite(scores).all() or (scores < 0).any() or (scores > 1).any():
        raise ConfigError(f"object scores must lie in [0, 1], got min {scores.min(initial=0):.4g} "
                          f"max {scores.max(initial=0):.4g}; pass calibrated confidences, not raw anomaly scores")
    p = np.asarray(pred_instances)
    if p.ndim == 2 and p.dtype != bool:
        n = int(p.max(initial=0))
        if p.min(initial=0) < 0 or n > len(scores):
            raise ConfigError(f"label map has ids up to {n} but {len(scores)} scores were given (id i takes scores[i-1])")
        return np.concatenate([[0.0], scores]).astype(np.float32)[p]
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or len(p) != len(scores):
        raise ConfigError(f"expected (N,H,W) masks with N = {len(scores)} scores, got shape {p.shape}")
    out = np.zeros(p.shape[1:] if shape is None else shape, np.float32)
    for k in np.argsort(scores, kind="stable"):  # highest score painted last
        out[p[k].astype(bool)] = scores[k]
    return out


class ObjectScoreCurve:
    """Streaming sums of per-image IoU and Dice at every threshold of the grid; ``compute()`` is collective."""

    def __init__(self, step: float = 0.01):
        self.step = float(step)
        self.thresholds = threshold_grid(self.step)
        self.reset()

    def reset(self) -> None:
        t = len(self.thresholds)
        self._iou = np.zeros(t, np.float64)
        self._dice = np.zeros(t, np.float64)
        self._n = 0

    def update(self, score_map: Any, ood_mask: Any) -> None:
        """score_map: (H,W) object scores in [0, 1]; ood_mask: (H,W) 0 / 1 anomaly / 255 (void = background)."""
        s = np.asarray(score_map, np.float32)
        g = np.asarray(ood_mask) == 1
        if s.shape != g.shape:
            raise ConfigError(f"object score map {s.shape} and label {g.shape} differ in size")
        values, inverse = np.unique(s.ravel(), return_inverse=True)
        per_all = np.bincount(inverse, minlength=len(values))
        per_gt = np.bincount(inverse, weights=g.ravel(), minlength=len(values))
        # pixels with value > t: suffix sums over the sorted distinct values
        first_above = np.searchsorted(values, self.thresholds, side="right")
        suffix_all = np.concatenate([np.cumsum(per_all[::-1])[::-1], [0]])
        suffix_gt = np.concatenate([np.cumsum(per_gt[::-1])[::-1], [0]])
        pred = suffix_all[first_above].astype(np.float64)
        inter = suffix_gt[first_above]
        union = pred + float(g.sum()) - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            self._iou += np.where(union > 0, inter / union, 0.0)
            self._dice += np.where(inter + union > 0, 2 * inter / (inter + union), 0.0)
        self._n += 1

    def compute(self) -> dict[str, Any]:
        """best_iou, best_threshold, au_iou, mean_f1, iou_curve, f1_curve, thresholds, n_images; ConfigError when
        no image was added."""
        parts = dist.gather((self._iou, self._dice, self._n))
        n = sum(p[2] for p in parts)
        if n == 0:
            raise ConfigError("ObjectScoreCurve.compute(): no images were added")
        iou = sum(p[0] for p in parts) / n
        dice = sum(p[1] for p in parts) / n
        t = self.thresholds.astype(np.float64)
        best = int(np.argmax(iou)) if iou.max() > 0 else 0
        return {"best_iou": float(iou[best]), "best_threshold": float(round(t[best], 6)),
                "au_iou": float(np.sum((iou[1:] + iou[:-1]) * np.diff(t)) / 2), "mean_f1": float(dice.mean()),
                "iou_curve": iou.tolist(), "f1_curve": dice.tolist(), "thresholds": t.tolist(), "n_images": n}
