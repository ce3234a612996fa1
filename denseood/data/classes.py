"""Class sets and label-id tables (one place; readers and checkpoints refer to these by name).

See docs/architecture.md.
"""
from __future__ import annotations

import numpy as np

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)

#: Cityscapes labelId -> trainId, as in cityscapesScripts/helpers/labels.py (all other ids -> 255)
CITYSCAPES_LABELID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

#: StreetHazards inlier classes after "annotation value - 1" (0 = unlabeled/void, 13 = anomaly); train id = value - 2
STREETHAZARDS_CLASSES: tuple[str, ...] = (
    "building", "fence", "other", "pedestrian", "pole", "road line", "road", "sidewalk", "vegetation",
    "car", "wall", "traffic sign",
)

CLASS_SETS: dict[str, tuple[str, ...]] = {
    "cityscapes": CITYSCAPES_CLASSES,
    "streethazards": STREETHAZARDS_CLASSES,
}


def cityscapes_lut() -> np.ndarray:
    """(256,) uint8 lookup table labelId -> trainId (255 for ids that are not trained on)."""
    lut = np.full(256, 255, dtype=np.uint8)
    for lid, tid in CITYSCAPES_LABELID_TO_TRAINID.items():
        lut[lid] = tid
    return lut
