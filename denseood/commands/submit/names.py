"""Choices of ``denseood submit`` (torch-free: its help lists them). See docs/architecture.md."""
from __future__ import annotations

#: where OoDIS objects come from: S2M, thresholded components, or a mask transformer's query masks
OBJECTS = ("s2m", "components", "queries")
#: ``submit smiyc --track`` -> the reader of that track
TRACKS = {"anomaly": "smiyc-anomaly", "obstacle": "smiyc-obstacle"}
