"""Batched inference engine (:class:`Inference`, in ``engine``) and its helpers (``util``).

Segmenter forward under autocast, channels_last, resize or sliding window, optional flip averaging and
``torch.compile``; anomaly maps computed on the device in float32, batch by batch. See docs/architecture.md.
"""
from __future__ import annotations

from ..config import parse_hw
from ..dist import resolve_device
from .engine import Inference
from .util import (DTYPES, MAX_PIXELS, ShardSampler, check_max_pixels, collate_samples, dtype_name, peak_memory_mb,
                   resolve_dtype, window_positions, window_weights)

__all__ = ["Inference", "ShardSampler", "collate_samples", "resolve_device", "resolve_dtype", "dtype_name",
           "parse_hw", "peak_memory_mb", "DTYPES", "MAX_PIXELS", "check_max_pixels", "window_positions",
           "window_weights"]
