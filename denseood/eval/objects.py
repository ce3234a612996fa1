"""Object-level metrics for S2M outputs (predicted anomaly instance masks).

* ``iou``: dataset-level IoU of the union of predicted masks with the anomaly ground truth, void excluded:
  Σ_images |pred ∩ gt| / Σ_images |pred ∪ gt| over non-void pixels (``iou_per_image_mean`` averages the
  per-image IoU over images whose union is non-empty);
* ``sIoU``, ``PPV``, ``mean_F1``, ``F1_per_threshold``: SMIYC component metrics with each predicted mask as
  one component (``ComponentMetrics.update_instances``).
See docs/architecture.md.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import DenseOODError
from .components import ComponentMetrics, instance_inputs
from .. import dist


class ObjectMetrics:
    """Accumulate S2M object metrics. min_instance_size: GT components smaller than this become void
    for the component metrics (100 AnomalyTrack, 10 ObstacleTrack). compute() is collective under DDP."""

    def __init__(self, min_instance_size: int = 100):
        self.components = ComponentMetrics(threshold=None, min_segment_size=0, min_instance_size=min_instance_size)
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated images."""
        self.components.reset()
        self._inter = 0
        self._union = 0
        self._per_image: list[float] = []
        self._n_images = 0

    def update(self, pred_instances: Any, ood_mask: Any) -> None:
        """One image: pred_instances (H,W) int label map (0 background) or (N,H,W) bool masks; ood_mask (H,W)
        uint8 0/1/255."""
        lab, gt = instance_inputs(pred_instances, ood_mask, "ObjectMetrics.update")
        valid = gt != 255
        pred = (lab > 0) & valid
        anom = gt == 1
        inter = int(np.count_nonzero(pred & anom))
        union = int(np.count_nonzero(pred | anom))
        self._inter += inter
        self._union += union
        if union:
            self._per_image.append(inter / union)
        self._n_images += 1
        self.components._add_instance_labels(lab, gt)

    def compute(self) -> dict:
        """iou, iou_per_image_mean, sIoU, PPV, mean_F1, F1_per_threshold, n_gt, n_pred, n_images."""
        tot = dist.all_reduce(torch.tensor([self._inter, self._union, self._n_images], dtype=torch.int64)).tolist()
        per_image = self._per_image
        if dist.is_dist():
            per_image = [v for part in dist.gather(per_image) for v in part]
        inter, union, n_images = (int(v) for v in tot)
        if n_images == 0:
            raise DenseOODError("ObjectMetrics.compute(): no images were added; call update() first")
        comp = self.components.compute()
        out = dict(iou=inter / union if union else float("nan"),
                   iou_per_image_mean=math.fsum(per_image) / len(per_image) if per_image else float("nan"),
                   sIoU=comp["sIoU"], PPV=comp["PPV"], mean_F1=comp["mean_F1"],
                   F1_per_threshold=comp["F1_per_threshold"], n_gt=comp["n_gt"], n_pred=comp["n_pred"],
                   n_images=n_images, intersection=inter, union=union)
        return out
