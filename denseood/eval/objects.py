"""Object-level metrics for S2M outputs (predicted anomaly instance masks, optionally with object scores).

* ``iou``: dataset-level IoU of the union of predicted masks with the anomaly ground truth, void excluded:
  Σ_images |pred ∩ gt| / Σ_images |pred ∪ gt| over non-void pixels (``iou_per_image_mean`` averages the
  per-image IoU over images whose union is non-empty);
* ``sIoU``, ``PPV``, ``mean_F1``, ``F1_per_threshold``: SMIYC component metrics with each predicted mask as
  one component (``ComponentMetrics.update_instances``);
* with object scores: ``best_iou``, ``best_threshold``, ``au_iou``, ``mean_f1`` of the S2M paper protocol
  (:class:`ObjectScoreCurve` on :func:`paint_objects` maps) and ``instance_ap`` = ``{"oodis": {...}, "coco":
  {...}}`` (:class:`InstanceAPReport`; OoDIS is the headline). Protocol ``"s2m"`` requires scores;
  ``"smiyc"`` reports these keys only when every image had scores (they are absent otherwise, never null).
See docs/metrics.md and docs/architecture.md.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .. import dist
from ..errors import ConfigError, DenseOODError
from .components import ComponentMetrics, connected_components, instance_inputs
from .instance_ap import InstanceAPReport
from .object_curve import ObjectScoreCurve, paint_objects

PROTOCOLS = ("smiyc", "s2m")
CURVE_KEYS = ("best_iou", "best_threshold", "au_iou", "mean_f1")


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def gt_instance_ids(ood_mask: np.ndarray, instances: Any = None) -> np.ndarray:
    """(H,W) int ground-truth object ids of one image: ``instances`` (the dataset's ids) restricted to
    ``ood_mask == 1`` where given, else the 8-connected components of ``ood_mask == 1``; 0 = none."""
    anom = np.asarray(ood_mask) == 1
    if instances is None:
        return connected_components(anom)[1]
    ids = _numpy(instances)
    if ids.shape != anom.shape:
        raise ConfigError(f"instances {ids.shape} and ood_mask {anom.shape} differ in size")
    return np.where(anom, ids, 0)


def _pred_masks(pred_instances: Any, lab: np.ndarray, n: int) -> np.ndarray:
    """(N,H,W) bool masks: the given masks as they are, or ids 1..n of the label map ``lab``."""
    p = _numpy(pred_instances)
    if p.ndim == 3:
        return p.astype(bool)
    if p.dtype == bool:
        return p[None]
    return lab[None] == np.arange(1, n + 1, dtype=lab.dtype)[:, None, None]


class ObjectMetrics:
    """Accumulate S2M object metrics; compute() is collective under DDP.

    protocol: "smiyc" (scores optional) or "s2m" (scores required on every update). step: threshold step of
    the S2M curve, in (0, 1]. min_instance_size: GT components smaller than this become void for the
    component metrics (100 AnomalyTrack, 10 ObstacleTrack). ap_min_size: the instance AP's ignore size (pixels; OoDIS 10).
    """

    def __init__(self, protocol: str = "smiyc", step: float = 0.01, min_instance_size: int = 100,
                 ap_min_size: int = 10):
        if protocol not in PROTOCOLS:
            raise ConfigError(f"ObjectMetrics protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.protocol = protocol
        self.components = ComponentMetrics(threshold=None, min_segment_size=0, min_instance_size=min_instance_size)
        self.curve = ObjectScoreCurve(step)
        self.instance_ap = InstanceAPReport(min_size=ap_min_size)
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated images."""
        self.components.reset()
        self.curve.reset()
        self.instance_ap.reset()
        self._inter = 0
        self._union = 0
        self._per_image: list[float] = []
        self._n_images = 0
        self._n_scored = 0

    def update(self, pred_instances: Any, ood_mask: Any, scores: Any = None, instances: Any = None,
               full_masks: Any = None) -> None:
        """One image: pred_instances (H,W) int label map (0 background, ids 1..N) or (N,H,W) bool masks;
        ood_mask (H,W) uint8 0/1/255; scores (N,) object scores in [0, 1] (id i has ``scores[i-1]``);
        instances (H,W) int ground-truth instance ids (0 none; only their pixels with ood_mask == 1 count), else
        8-connected components of ood_mask == 1; full_masks: optional (N,H,W) bool masks before overlaps were
        resolved into the label map (instance AP scores these full masks; default: the masks of pred_instances)."""
        if scores is None and self.protocol == "s2m":
            raise ConfigError("ObjectMetrics(protocol='s2m').update needs scores: one object score in [0, 1] per "
                              "predicted instance")
        lab, gt = instance_inputs(pred_instances, ood_mask, "ObjectMetrics.update")
        self._add_overlap(lab, gt)
        self.components._add_instance_labels(lab, gt)
        if scores is None:
            return
        s = _numpy(scores).astype(np.float64).reshape(-1)
        self.curve.update(paint_objects(_numpy(pred_instances), s, gt.shape), gt)
        masks = _pred_masks(pred_instances, lab, len(s)) if full_masks is None else _numpy(full_masks).astype(bool)
        self.instance_ap.update(masks, s, gt_instance_ids(gt, instances), gt == 255)
        self._n_scored += 1

    def _add_overlap(self, lab: np.ndarray, gt: np.ndarray) -> None:
        """Accumulate the union-of-masks IoU terms of one image (void excluded)."""
        pred = (lab > 0) & (gt != 255)
        anom = gt == 1
        inter = int(np.count_nonzero(pred & anom))
        union = int(np.count_nonzero(pred | anom))
        self._inter += inter
        self._union += union
        if union:
            self._per_image.append(inter / union)
        self._n_images += 1

    def compute(self) -> dict:
        """iou, iou_per_image_mean, sIoU, PPV, mean_F1, F1_per_threshold, n_gt, n_pred, n_images, intersection,
        union and, with scores, best_iou, best_threshold, au_iou, mean_f1, instance_ap {"oodis", "coco"}.
        No image at all raises DenseOODError."""
        tot = dist.all_reduce(torch.tensor([self._inter, self._union, self._n_images, self._n_scored],
                                           dtype=torch.int64)).tolist()
        per_image = self._per_image
        if dist.is_dist():
            per_image = [v for part in dist.gather(per_image) for v in part]
        inter, union, n_images, n_scored = (int(v) for v in tot)
        if n_images == 0:
            raise DenseOODError("ObjectMetrics.compute(): no images were added; call update() first")
        if 0 < n_scored < n_images:
            raise ConfigError(f"ObjectMetrics: {n_scored} of {n_images} images had object scores; give scores "
                              "for every image or for none")
        comp = self.components.compute()
        out = dict(iou=inter / union if union else float("nan"),
                   iou_per_image_mean=math.fsum(per_image) / len(per_image) if per_image else float("nan"),
                   sIoU=comp["sIoU"], PPV=comp["PPV"], mean_F1=comp["mean_F1"],
                   F1_per_threshold=comp["F1_per_threshold"], n_gt=comp["n_gt"], n_pred=comp["n_pred"],
                   n_images=n_images, intersection=inter, union=union)
        if n_scored:
            curve = self.curve.compute()
            out.update({k: curve[k] for k in CURVE_KEYS})
            out["instance_ap"] = self.instance_ap.compute()
        return out
