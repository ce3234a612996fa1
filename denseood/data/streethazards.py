"""StreetHazards reader (CAOS benchmark, CARLA scenes 720x1280), official layout of hendrycks/anomaly-seg.

``ROOT/train/images/training/<town>/<n>.png`` (split ``train``), ``ROOT/train/images/validation/<town>/<n>.png``
(split ``val``), ``ROOT/test/images/test/<town>/<n>.png`` (split ``test``; towns t5, t6), each with the same relative
path under ``annotations/`` instead of ``images/``.

See docs/architecture.md.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ConfigError
from ..io import check_label_values, check_same_size, read_image, read_label
from .base import BaseDataset, Frame
from .classes import STREETHAZARDS_CLASSES
from .names import STREETHAZARDS_UNLABELED
from .sample import IGNORE, Sample

#: The ONE StreetHazards mapping table: annotation PNG value -> (train id, ood label).
#: The CAOS code (hendrycks/anomaly-seg dataset.py) subtracts 1 from the PNG: 0 = unlabeled, 1..12 = the 12 inlier
#: classes in STREETHAZARDS_CLASSES order, 13 = anomaly (cfg.OOD.out_labels = 13, test only). denseood trains the 12
#: inlier classes (train id = PNG value - 2); "unlabeled" is void for training. For the OOD mask the official
#: eval_ood.py counts "unlabeled" as INLIER (it masks nothing but the anomaly class); that is denseood's default
#: (``unlabeled="inlier"``, ood 0), ``unlabeled="void"`` makes it 255 instead. PNG value 0 (-1 after the shift, the
#: official ignore index) is void. See docs/metrics.md.
STREETHAZARDS_TABLE: dict[int, tuple[int, int]] = {
    0: (IGNORE, IGNORE),                               # not a class (-1 after the shift): void
    1: (IGNORE, 0),                                    # unlabeled: void for training, inlier for OOD (official)
    **{v: (v - 2, 0) for v in range(2, 14)},           # building .. traffic sign: train ids 0..11, inlier
    14: (IGNORE, 1),                                   # anomaly (test split): ignore for training, OOD = 1
}
assert [STREETHAZARDS_TABLE[v][0] for v in range(2, 14)] == list(range(len(STREETHAZARDS_CLASSES)))


SPLIT_DIRS = {"train": ("train", "training"), "val": ("train", "validation"), "test": ("test", "test")}


def resolve_unlabeled(unlabeled: str | None = None, unlabeled_as_inlier: bool | None = None) -> str:
    """The OOD convention for "unlabeled" pixels: "inlier" (official, default) or "void".
    ``unlabeled_as_inlier`` is the older boolean spelling (True = "inlier", False = "void")."""
    if unlabeled is not None and unlabeled not in STREETHAZARDS_UNLABELED:
        raise ConfigError(f"StreetHazards unlabeled={unlabeled!r}: expected one of {', '.join(STREETHAZARDS_UNLABELED)}")
    if unlabeled_as_inlier is not None:
        old = "inlier" if unlabeled_as_inlier else "void"
        if unlabeled is not None and unlabeled != old:
            raise ConfigError(f"StreetHazards: unlabeled={unlabeled!r} contradicts unlabeled_as_inlier={unlabeled_as_inlier}")
        return old
    return unlabeled or "inlier"


def streethazards_luts(unlabeled: str = "inlier") -> tuple[np.ndarray, np.ndarray]:
    """(semantic_lut, ood_lut), each (256,) uint8, built from :data:`STREETHAZARDS_TABLE`.

    ``unlabeled``: "inlier" (the official CAOS eval_ood.py: ood 0 for PNG value 1) or "void" (ood 255)."""
    unlabeled = resolve_unlabeled(unlabeled)
    sem = np.full(256, IGNORE, dtype=np.uint8)
    ood = np.full(256, IGNORE, dtype=np.uint8)
    for v, (tid, o) in STREETHAZARDS_TABLE.items():
        sem[v], ood[v] = tid, o
    if unlabeled == "void":
        ood[1] = IGNORE
    return sem, ood


class StreetHazardsDataset(BaseDataset):
    """StreetHazards; ``train``/``val`` yield semantic train ids (ood_mask None), ``test`` yields semantic and
    ood_mask (anomaly 1, else 0; "unlabeled" pixels 0 as in the official CAOS code, or 255 with
    ``unlabeled="void"``; ``unlabeled_as_inlier`` is the older boolean spelling). Frame ids are ``<town>_<stem>``
    (e.g. ``t5_300``). ``convention`` records the choice for results.json."""

    name = "streethazards"
    splits = ("train", "val", "test")
    default_split = "test"
    default_protocol = "caos"
    class_set = "streethazards"
    has_semantic = True
    MARKERS = ("train/images/training", "test/images/test", "train/annotations", "test/annotations")
    LAYOUT = ("  ROOT/train/images/training/<town>/<n>.png      + ROOT/train/annotations/training/<town>/<n>.png\n"
              "  ROOT/train/images/validation/<town>/<n>.png    + ROOT/train/annotations/validation/<town>/<n>.png\n"
              "  ROOT/test/images/test/<town>/<n>.png           + ROOT/test/annotations/test/<town>/<n>.png\n"
              "  annotation values 1..14 (1 unlabeled, 2..13 inlier classes, 14 anomaly)")

    def __init__(self, root: str | os.PathLike, split: str | None = None, *,
                 unlabeled: str | None = None, unlabeled_as_inlier: bool | None = None, **kw) -> None:
        self.unlabeled = resolve_unlabeled(unlabeled, unlabeled_as_inlier)
        self.unlabeled_as_inlier = self.unlabeled == "inlier"
        super().__init__(root, split, **kw)
        self._sem_lut, self._ood_lut = streethazards_luts(self.unlabeled)

    @property
    def convention(self) -> dict[str, str]:
        """How the OOD mask treats "unlabeled" pixels, e.g. ``{"unlabeled": "inlier"}``."""
        return {"unlabeled": self.unlabeled}

    def _discover(self) -> list[Frame]:
        top, sub = SPLIT_DIRS[self.split]
        img_dir = self.root / top / "images" / sub
        ann_dir = self.root / top / "annotations" / sub
        if not img_dir.is_dir():
            raise self._missing(img_dir, "image folder")
        if not ann_dir.is_dir():
            raise self._missing(ann_dir, "annotation folder")
        frames = self._pair_frames(img_dir, ann_dir, lambda stem: (f"{stem}.png",), "<town>/*.png",
                                   folder_in_name=True)
        self.has_ood_labels = self.split == "test"
        return frames

    def _load(self, frame: Frame) -> Sample:
        image = read_image(frame.image)
        lab = read_label(frame.label)
        check_label_values(lab, sorted(STREETHAZARDS_TABLE), frame.label, "StreetHazards annotation (1..14)")
        check_same_size(image, lab, frame.image, frame.label)
        semantic = self._sem_lut[lab]
        ood = self._ood_lut[lab] if self.split == "test" else None
        return self._sample(frame, image, semantic=semantic, ood_mask=ood)
