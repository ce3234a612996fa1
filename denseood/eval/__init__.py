"""Evaluation metrics: pixel-level (AP, AUROC, FPR95), SMIYC component-level (sIoU, PPV, F1) and S2M object-level.

``PixelMetrics``, ``ComponentMetrics`` and ``ObjectMetrics`` accumulate over a dataset with ``update`` and
report with ``compute``; under torch.distributed ``compute`` is collective (every rank must call it) and
reduces through ``denseood.dist``. This package holds metric objects only; the ``denseood eval`` orchestration
lives in ``denseood.commands.eval``. Imported lazily, so that the torch-free ``eval.protocols`` stays cheap.
See docs/architecture.md.
"""
from __future__ import annotations

_EXPORTS = {
    "check_finite": "._inputs", "prepare_inputs": "._inputs",
    "SIOU_THRESHOLDS": ".components", "ComponentMetrics": ".components", "instances_to_labels": ".components",
    "desc_counts_exact": ".curves", "summarize_counts": ".curves",
    "StreamingHistogram": ".histogram",
    "InstanceAP": ".instance_ap", "InstanceAPReport": ".instance_ap",
    "ObjectScoreCurve": ".object_curve", "paint_objects": ".object_curve",
    "ObjectMetrics": ".objects",
    "MODES": ".pixel", "PixelMetrics": ".pixel",
    "SemanticMetrics": ".semantic",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
