"""The pixel-metric protocols (torch-free, so command-line help can list them without importing torch).

``PROTOCOLS`` maps each name to what it equals; :class:`denseood.eval.PixelMetrics` takes one as ``mode``.
See docs/metrics.md.
"""
from __future__ import annotations

PROTOCOLS: dict[str, str] = {
    "streaming": "streaming histogram (close to exact; no official evaluator)",
    "exact": "exact sort-based = sklearn / the Fishyscapes evaluator",
    "smiyc": "= the official SegmentMeIfYouCan evaluator",
    "caos": "= the StreetHazards CAOS evaluator (per-image average)",
}
