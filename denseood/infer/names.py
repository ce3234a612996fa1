"""Defaults of the inference stage that command-line help needs (torch-free). See docs/architecture.md."""
from __future__ import annotations

#: dtype names of --dtype (besides "auto") -> the torch dtype's attribute name
DTYPE_NAMES: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

#: default --max-pixels: frames and network inputs above this many pixels are refused before any work
MAX_PIXELS = 100_000_000
