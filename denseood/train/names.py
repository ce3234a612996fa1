"""Choices of the training stage that command-line help lists (torch-free). See docs/architecture.md."""
from __future__ import annotations

#: mixed precision of the segmenter while training (``train --amp``; fp16 uses a GradScaler, CUDA only)
AMP_MODES = ("none", "bf16", "fp16")
