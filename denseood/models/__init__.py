"""Models: the smp segmenter wrapper, its checkpoint file format, local encoder weights and the PatchFlow.

Public names (imported lazily, so importing one submodule does not import the others)::

    Segmenter, create_segmenter, ARCHS, STATS_KEYS                                (models.segmenter)
    save_checkpoint, read_checkpoint, CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION (models.checkpoint)
    load_encoder_weights                                                          (models.encoder_weights)
    SegmenterBase, IMAGENET_MEAN, IMAGENET_STD                                    (models.base)
    ModelOrigin, Source                                                           (models.origin)
    load_model, load_checkpoint, parse_spec, SOURCES
                    (models.sources.registry: PATH | hf:DIR | torchvision:NAME:FILE | python:MODULE:FN)
    PatchFlow, flow_from_config, nll_loss                                         (models.flow)

``models`` imports only the core modules and ``data``. See docs/architecture.md.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Segmenter": "segmenter", "create_segmenter": "segmenter", "ARCHS": "segmenter", "STATS_KEYS": "segmenter",
    "save_checkpoint": "checkpoint", "read_checkpoint": "checkpoint",
    "CHECKPOINT_FORMAT": "checkpoint", "CHECKPOINT_FORMAT_VERSION": "checkpoint",
    "load_encoder_weights": "encoder_weights",
    "SegmenterBase": "base", "IMAGENET_MEAN": "base", "IMAGENET_STD": "base",
    "ModelOrigin": "origin", "Source": "origin",
    "load_model": "sources.registry", "load_checkpoint": "sources.registry", "parse_spec": "sources.registry",
    "SOURCES": "sources.registry",
    "PatchFlow": "flow", "flow_from_config": "flow", "nll_loss": "flow",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
