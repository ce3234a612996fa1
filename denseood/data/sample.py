"""The Sample every reader yields (DESIGN.md, label convention).

See docs/architecture.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: value of void / ignore pixels in ood_mask and semantic maps
IGNORE = 255


@dataclass
class Sample:
    """One frame.

    image: (H,W,3) uint8 RGB.
    ood_mask: (H,W) uint8, 0 = inlier, 1 = anomaly, 255 = void; None when the split has no labels (test frames).
    semantic: (H,W) uint8 train ids 0..C-1, 255 = ignore; None when the reader has no semantic labels.
    instances: (H,W) int32 anomaly instance ids (0 = none) or None.
    name: frame id, unique within the split (used for output file names).
    """

    image: np.ndarray
    ood_mask: np.ndarray | None = None
    semantic: np.ndarray | None = None
    instances: np.ndarray | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)
