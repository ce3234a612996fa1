"""denseood: dense anomaly segmentation for driving scenes.

Public API (imported lazily so that ``import denseood`` stays cheap)::

    create_segmenter                                      (models.segmenter)
    save_checkpoint                                       (models.checkpoint)
    load_model, load_checkpoint                           (models.sources: PATH | hf: | torchvision: | python:)
    anomaly_score, SCORES                                 (scores)
    Inference                                             (infer)
    S2M                                                   (s2m.pipeline)
    PixelMetrics, ComponentMetrics, ObjectMetrics         (eval)
    open_dataset, Sample                                  (data)
    evaluate_maps                                         (commands.eval.maps)
"""
from __future__ import annotations

import os as _os

from ._version import __version__

# albumentations checks PyPI for a newer version when it is imported (a DNS query and an HTTPS connect).
# denseood never touches the network: switch that check off before any submodule can import it.
_os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"

_EXPORTS = {
    "create_segmenter": "denseood.models.segmenter",
    "save_checkpoint": "denseood.models.checkpoint",
    "load_checkpoint": "denseood.models.sources.registry",
    "Segmenter": "denseood.models.segmenter",
    "load_model": "denseood.models.sources.registry",
    "anomaly_score": "denseood.scores",
    "SCORES": "denseood.scores",
    "Inference": "denseood.infer",
    "S2M": "denseood.s2m.pipeline",
    "PixelMetrics": "denseood.eval",
    "ComponentMetrics": "denseood.eval",
    "ObjectMetrics": "denseood.eval",
    "open_dataset": "denseood.data",
    "evaluate_maps": "denseood.commands.eval.maps",
    "Sample": "denseood.data.sample",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'denseood' has no attribute {name!r}")
