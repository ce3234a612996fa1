"""Evaluation metrics: pixel-level (AP, AUROC, FPR95), SMIYC component-level (sIoU, PPV, F1) and S2M object-level.

``PixelMetrics``, ``ComponentMetrics`` and ``ObjectMetrics`` accumulate over a dataset with ``update`` and
report with ``compute``; under torch.distributed ``compute`` is collective (every rank must call it).
"""
from __future__ import annotations

from .components import SIOU_THRESHOLDS, ComponentMetrics, instances_to_labels
from .objects import ObjectMetrics
from .pixel import MODES, PixelMetrics, prepare_inputs

__all__ = ["PixelMetrics", "ComponentMetrics", "ObjectMetrics", "MODES", "SIOU_THRESHOLDS", "instances_to_labels",
           "prepare_inputs"]
