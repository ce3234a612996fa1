"""Evaluation metrics: pixel-level (AP, AUROC, FPR95), SMIYC component-level (sIoU, PPV, F1) and S2M object-level.

``PixelMetrics``, ``ComponentMetrics`` and ``ObjectMetrics`` accumulate over a dataset with ``update`` and
report with ``compute``; under torch.distributed ``compute`` is collective (every rank must call it) and
reduces through ``denseood.dist``. This package holds metric objects only; the ``denseood eval`` orchestration
lives in ``denseood.commands.eval``. See docs/architecture.md.
"""
from __future__ import annotations

from ._inputs import check_finite, prepare_inputs
from .components import SIOU_THRESHOLDS, ComponentMetrics, instances_to_labels
from .curves import desc_counts_exact, summarize_counts
from .histogram import StreamingHistogram
from .instance_ap import InstanceAP, InstanceAPReport
from .object_curve import ObjectScoreCurve, paint_objects
from .objects import ObjectMetrics
from .pixel import MODES, PixelMetrics
from .semantic import SemanticMetrics

__all__ = ["PixelMetrics", "ComponentMetrics", "ObjectMetrics", "MODES", "SIOU_THRESHOLDS", "instances_to_labels",
           "prepare_inputs", "check_finite", "desc_counts_exact", "summarize_counts", "StreamingHistogram",
           "ObjectScoreCurve", "InstanceAP", "InstanceAPReport", "SemanticMetrics", "paint_objects"]
