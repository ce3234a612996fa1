"""SMIYC component-level metrics: sIoU (per ground-truth component), PPV (per predicted component), F1.

Definitions follow the SegmentMeIfYouCan road-anomaly-benchmark segment evaluator
(``metrics/instance_segmentation.py``), implemented without per-component image passes:

* prediction = score strictly > ``threshold``, set to 0 on void (255) pixels;
* 8-connected components of the prediction and of the ground-truth anomaly mask (label 1);
* predicted components with fewer than ``min_segment_size`` pixels are removed (500 AnomalyTrack,
  50 ObstacleTrack); ground-truth components with fewer than ``min_instance_size`` pixels become void
  (100 / 10). As in the official loop, the background "component" (every non-anomaly pixel, void included)
  is voided too when it is smaller than ``min_instance_size`` (only possible on tiny images);
* everything is then restricted to the non-void region of interest (ROI); component sizes are counted
  inside the ROI;
* for a GT component i with overlapping predicted components S_i:
  sIoU_i = |i ∩ ∪S_i| / (|i| + Σ_{j∈S_i} |j \\ GT|): the union excludes pixels of other GT components;
* for a predicted component j with overlapping GT components G_j: PPV_j = |j ∩ GT| / |j| and
  sIoU_j = |j ∩ GT| / (|j| + Σ_{i∈G_j} |i \\ pred|);
* at each sIoU threshold t in linspace(0.25, 0.75, 11): TP = #GT with sIoU >= t, FN = #GT with sIoU < t,
  FP = #pred with PPV < t; F1_t = 2 TP / (2 TP + FN + FP); mean F1 = mean over t.
  sIoU and PPV are means over all components of the dataset (pooled, not per image).

The per-component quantities come from one sparse co-occurrence table of the two labelings
(``np.bincount``), so the cost is O(pixels) per frame however many components a noisy map produces.
See docs/architecture.md.
"""
from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import ConfigError, DenseOODError
from .. import dist
from ._inputs import check_finite, prepare_inputs, to_tensor

SIOU_THRESHOLDS = np.linspace(0.25, 0.75, 11, endpoint=True)
_DENSE_TABLE_MAX = 1 << 24


def connected_components(binary: np.ndarray) -> tuple[int, np.ndarray]:
    """8-connected components. binary: (H,W) bool. Returns (number of labels incl. background 0, int32 labels)."""
    b = np.ascontiguousarray(binary, dtype=np.uint8)
    n, lab = cv2.connectedComponents(b, connectivity=8, ltype=cv2.CV_32S)
    return int(n), lab


def _compact(labels: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel ``labels`` (0 = background) so that kept ids become 1..k (others 0). keep: bool per id."""
    keep = keep.copy()
    keep[0] = False
    lut = np.zeros(keep.size, dtype=np.int32)
    k = int(keep.sum())
    lut[keep] = np.arange(1, k + 1, dtype=np.int32)
    return lut[labels], k


def threshold_components(score_map: np.ndarray, ood_mask: np.ndarray, threshold: float,
                         min_segment_size: int) -> np.ndarray:
    """Predicted components of one frame, as the SMIYC evaluator forms them: pixels with score strictly greater
    than ``threshold``, void (255) removed, 8-connected components, those under ``min_segment_size`` pixels
    dropped. score_map (H,W) float, ood_mask (H,W) uint8 0/1/255. Returns (H,W) int32 ids 1..K (0 = none)."""
    n, lab = connected_components((np.asarray(score_map) > threshold) & (np.asarray(ood_mask) != 255))
    size = np.bincount(lab.ravel(), minlength=n)
    return _compact(lab, size >= min_segment_size)[0]


def instances_to_labels(pred_instances: Any, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Instance masks -> (H,W) int32 label map (0 = background, 1..N).

    pred_instances: (H,W) integer label map (0 background, ids > 0; not merged even when touching), or
    (N,H,W) bool / 0-1 masks (N may be 0), or a (H,W) bool mask (one instance). Where masks overlap, the
    pixel goes to the earliest mask in the list (S2M lists masks by decreasing object score).
    """
    x = to_tensor(pred_instances, "pred_instances").cpu().numpy()
    if x.ndim == 3:
        if x.dtype != np.bool_:
            if not np.issubdtype(x.dtype, np.integer) or x.size and (x.min() < 0 or x.max() > 1):
                raise DenseOODError("(N,H,W) pred_instances must be bool (or 0/1) masks; give a (H,W) int label map "
                                    "for instance ids")
            x = x != 0
        hw = x.shape[1:]
        if x.shape[0] == 0:
            lab = np.zeros(hw, dtype=np.int32)
        else:
            anyv = x.any(0)
            lab = np.where(anyv, x.argmax(0).astype(np.int32) + 1, 0).astype(np.int32)
    elif x.ndim == 2:
        hw = x.shape
        if x.dtype == np.bool_:
            lab = x.astype(np.int32)
        elif np.issubdtype(x.dtype, np.integer):
            if x.size and x.min() < 0:
                raise DenseOODError(f"pred_instances label map has negative ids (min {x.min()}); use 0 for background "
                                    "and positive instance ids")
            if x.size and int(x.max()) > 1 << 20:
                _, inv = np.unique(x, return_inverse=True)
                lab = inv.reshape(hw).astype(np.int32) + (0 if (x == 0).any() else 1)
            else:
                lab = x.astype(np.int32)
        else:
            raise DenseOODError(f"pred_instances must be an int label map (H,W) or bool masks (N,H,W), got dtype {x.dtype}")
    else:
        raise DenseOODError(f"pred_instances must have shape (H,W) or (N,H,W), got {x.shape}")
    if shape is not None and tuple(hw) != tuple(shape):
        raise DenseOODError(f"pred_instances size {tuple(hw)} differs from ood_mask size {tuple(shape)}")
    return lab


def instance_inputs(pred_instances: Any, ood_mask: Any, who: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated inputs of one image: (label map (H,W) int, 0 = background; ood_mask (H,W) uint8 0/1/255).

    pred_instances: (H,W) int label map or (N,H,W) bool masks. ``who`` names the caller in the error message.
    """
    m = to_tensor(ood_mask, "ood_mask")
    if m.ndim != 2:
        raise DenseOODError(f"{who} takes one image: ood_mask must be (H,W), got {tuple(m.shape)}")
    _, m = prepare_inputs(torch.zeros(m.shape, dtype=torch.float32), m.cpu())
    gt = m[0].numpy()
    return instances_to_labels(pred_instances, gt.shape), gt


def frame_component_stats(pred_labels: np.ndarray, gt: np.ndarray, min_instance_size: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-component statistics of one frame.

    pred_labels: (H,W) int predicted components (0 = background; already void-masked and size-filtered);
    gt: (H,W) uint8 0/1/255. Returns float64 arrays (sIoU per GT component, sIoU per predicted component,
    precision per predicted component), components ordered by id.
    """
    n_g, g_lab = connected_components(gt == 1)
    g_size_full = np.bincount(g_lab.ravel(), minlength=n_g)
    small = g_size_full < min_instance_size  # index 0 included, like the official loop
    roi = gt != 255
    if small.any():
        roi &= ~small[g_lab]
    g = g_lab[roi].astype(np.int64)
    p = pred_labels[roi].astype(np.int64)
    n_p = int(pred_labels.max()) + 1 if pred_labels.size else 1
    sG = np.bincount(g, minlength=n_g).astype(np.float64)
    sP = np.bincount(p, minlength=n_p).astype(np.float64)
    both = (g > 0) & (p > 0)
    gk, pk = g[both], p[both]
    if n_g * n_p <= _DENSE_TABLE_MAX:
        table = np.bincount(gk * n_p + pk, minlength=n_g * n_p)
        nz = np.flatnonzero(table)
        gi, pj, cnt = nz // n_p, nz % n_p, table[nz].astype(np.float64)
    else:
        keys, cnt = np.unique(gk * n_p + pk, return_counts=True)
        gi, pj, cnt = keys // n_p, keys % n_p, cnt.astype(np.float64)
    rowsum = np.bincount(gi, weights=cnt, minlength=n_g)  # GT pixels covered by any prediction
    colsum = np.bincount(pj, weights=cnt, minlength=n_p)  # predicted pixels on any GT component
    union_g = sG + np.bincount(gi, weights=(sP - colsum)[pj], minlength=n_g)
    union_p = sP + np.bincount(pj, weights=(sG - rowsum)[gi], minlength=n_p)
    gt_ids = np.flatnonzero(sG[1:] > 0) + 1
    pr_ids = np.flatnonzero(sP[1:] > 0) + 1
    return (rowsum[gt_ids] / union_g[gt_ids], colsum[pr_ids] / union_p[pr_ids], colsum[pr_ids] / sP[pr_ids])


class ComponentMetrics:
    """Accumulate SMIYC component metrics (sIoU, PPV, F1 over sIoU thresholds) over a dataset.

    threshold: anomaly-score threshold (prediction = score > threshold); may be None at construction and
    set later (``.threshold = t``), e.g. to the best-F1 pixel threshold of a first pass; required by update().
    min_segment_size: predicted components smaller than this are removed (500 AnomalyTrack, 50 ObstacleTrack).
    min_instance_size: ground-truth components smaller than this become void (100 / 10).
    ``compute()`` is collective under torch.distributed (every rank must call it).
    """

    def __init__(self, threshold: float | None = None, min_segment_size: int = 500, min_instance_size: int = 100):
        for name, v in (("min_segment_size", min_segment_size), ("min_instance_size", min_instance_size)):
            if int(v) != v or v < 0:
                raise ConfigError(f"ComponentMetrics {name}={v!r} must be a non-negative integer")
        if threshold is not None and not math.isfinite(float(threshold)):
            raise ConfigError(f"ComponentMetrics threshold={threshold!r} must be a finite number")
        self.threshold = None if threshold is None else float(threshold)
        self.min_segment_size = int(min_segment_size)
        self.min_instance_size = int(min_instance_size)
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated frames."""
        self._siou_gt: list[np.ndarray] = []
        self._siou_pred: list[np.ndarray] = []
        self._prec_pred: list[np.ndarray] = []
        self._n_frames = 0

    def _add(self, pred_labels: np.ndarray, gt: np.ndarray) -> None:
        sg, sp, pp = frame_component_stats(pred_labels, gt, self.min_instance_size)
        self._siou_gt.append(sg)
        self._siou_pred.append(sp)
        self._prec_pred.append(pp)
        self._n_frames += 1

    def update(self, scores: Any, ood_mask: Any) -> None:
        """scores (H,W)|(B,H,W) float, ood_mask same shape uint8 0/1/255; prediction = scores > threshold."""
        if self.threshold is None:
            raise DenseOODError("ComponentMetrics.update(scores, ...) needs a score threshold: construct it with "
                                "threshold=t or set .threshold (e.g. the best_f1_threshold of PixelMetrics), or use "
                                "update_instances() with predicted masks")
        s, m = prepare_inputs(scores, ood_mask)
        check_finite(s, m)
        s_np, gts = s.cpu().numpy(), m.cpu().numpy()
        for b in range(s_np.shape[0]):
            self._add(threshold_components(s_np[b], gts[b], self.threshold, self.min_segment_size), gts[b])

    def update_instances(self, pred_instances: Any, ood_mask: Any, min_pred_size: int = 0) -> None:
        """Given predicted instances of one image instead of a thresholded score map.

        pred_instances: (H,W) int label map (0 background) or (N,H,W) bool masks; each instance is one
        component (touching instances are not merged; a disconnected mask stays one component; overlaps go
        to the earliest mask). ood_mask: (H,W) uint8 0/1/255. Instance pixels on void are dropped;
        instances with fewer than ``min_pred_size`` remaining pixels are removed (default 0 = keep all, as
        the official evaluator does for given masks).
        """
        lab, gt = instance_inputs(pred_instances, ood_mask, "update_instances")
        self._add_instance_labels(lab, gt, min_pred_size)

    def _add_instance_labels(self, lab: np.ndarray, gt: np.ndarray, min_pred_size: int = 0) -> None:
        """update_instances after validation: lab (H,W) int label map, gt (H,W) uint8 0/1/255."""
        lab = np.where(gt == 255, 0, lab)
        size = np.bincount(lab.ravel())
        lab, _ = _compact(lab, size >= max(int(min_pred_size), 1))
        self._add(lab, gt)

    def compute(self) -> dict:
        """Dataset-level component metrics (collective under torch.distributed).

        Returns sIoU (mean over GT components), PPV (mean precision over predicted components), mean_F1,
        F1_per_threshold (11 floats), sIoU_pred, tp/fn/fp lists, sIoU_thresholds, n_gt, n_pred, n_frames and
        the settings. Means over zero components are NaN (e.g. PPV when nothing was predicted); no frame at all
        raises DenseOODError.
        """
        sg = np.concatenate(self._siou_gt) if self._siou_gt else np.zeros(0)
        sp = np.concatenate(self._siou_pred) if self._siou_pred else np.zeros(0)
        pp = np.concatenate(self._prec_pred) if self._prec_pred else np.zeros(0)
        n_frames = self._n_frames
        if dist.is_dist():
            parts = dist.gather((sg, sp, pp, n_frames))
            sg = np.concatenate([q[0] for q in parts])
            sp = np.concatenate([q[1] for q in parts])
            pp = np.concatenate([q[2] for q in parts])
            n_frames = sum(q[3] for q in parts)
        if n_frames == 0:
            raise DenseOODError("ComponentMetrics.compute(): no frames were added; call update() or update_instances() first")

        def mean(a: np.ndarray) -> float:
            return math.fsum(a.tolist()) / a.size if a.size else float("nan")

        tps, fns, fps, f1s = [], [], [], []
        for t in SIOU_THRESHOLDS:
            tp = int(np.count_nonzero(sg >= t))
            fn = int(sg.size - tp)
            fp = int(np.count_nonzero(pp < t))
            den = 2 * tp + fn + fp
            tps.append(tp)
            fns.append(fn)
            fps.append(fp)
            f1s.append(2 * tp / den if den else float("nan"))
        return dict(sIoU=mean(sg), PPV=mean(pp), mean_F1=float(np.mean(f1s)), F1_per_threshold=f1s,
                    sIoU_pred=mean(sp), tp=tps, fn=fns, fp=fps, sIoU_thresholds=SIOU_THRESHOLDS.tolist(),
                    n_gt=int(sg.size), n_pred=int(pp.size), n_frames=int(n_frames), threshold=self.threshold,
                    min_segment_size=self.min_segment_size, min_instance_size=self.min_instance_size)
