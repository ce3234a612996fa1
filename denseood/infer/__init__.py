"""Batched inference engine (:class:`Inference`, in ``engine``) and its helpers (``util``).

Segmenter forward under autocast, channels_last, resize or sliding window, optional flip averaging and
``torch.compile``; anomaly maps computed on the device in float32, batch by batch. Imported lazily, so that the
torch-free ``infer.names`` stays cheap. See docs/architecture.md.
"""
from __future__ import annotations

_EXPORTS = {
    "Inference": ".engine", "parse_hw": "denseood.config", "resolve_device": "denseood.dist",
    **{n: ".util" for n in ("DTYPES", "MAX_PIXELS", "ShardSampler", "check_max_pixels", "collate_samples",
                            "dtype_name", "peak_memory_mb", "resolve_dtype", "window_positions", "window_weights")},
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
