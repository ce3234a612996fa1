"""Defaults of the inference stage that command-line help needs (torch-free). See docs/architecture.md."""
from __future__ import annotations

#: default --max-pixels: frames and network inputs above this many pixels are refused before any work
MAX_PIXELS = 100_000_000
