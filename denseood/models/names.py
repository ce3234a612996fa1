"""Names of the models stage that command-line help lists (torch-free). See docs/architecture.md."""
from __future__ import annotations

#: training heads a Segmenter can carry (``denseood train --head NAME``; abet: AbeT's learned temperature)
HEADS = ("abet",)
