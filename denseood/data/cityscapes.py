"""Cityscapes reader (official layout; labelIds -> 19 train ids as in cityscapesScripts, or labelTrainIds).

See docs/architecture.md.
"""
from __future__ import annotations

import os

import numpy as np

from ..io import check_label_values, check_same_size, read_image, read_label
from .base import BaseDataset, Frame
from .classes import cityscapes_lut
from .sample import IGNORE, Sample

IMAGE_SUFFIX = "_leftImg8bit"
TRAINIDS_SUFFIX = "_gtFine_labelTrainIds.png"
LABELIDS_SUFFIX = "_gtFine_labelIds.png"
#: labelIds PNG values allowed: 0..33 (cityscapesScripts ids; -1 'license plate' is stored as 255 when at all)
LABELID_VALUES = (*range(34), IGNORE)


class CityscapesDataset(BaseDataset):
    """``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` + ``gtFine/<split>/<city>/..._gtFine_labelTrainIds.png``
    (preferred) or ``..._gtFine_labelIds.png`` (mapped with :func:`cityscapes_lut`).

    Yields ``Sample(image, semantic=uint8 train ids 0..18 / 255, ood_mask=None)``. The ``test`` split reads labels
    when present (Cityscapes test labels are placeholders) and yields ``semantic=None`` otherwise.
    """

    name = "cityscapes"
    splits = ("train", "val", "test")
    default_split = "val"
    class_set = "cityscapes"
    has_semantic = True
    MARKERS = ("leftImg8bit", "gtFine")
    LAYOUT = ("  ROOT/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png\n"
              "  ROOT/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png "
              "(or ..._gtFine_labelIds.png)")

    def __init__(self, root: str | os.PathLike, split: str | None = None, **kw) -> None:
        super().__init__(root, split, **kw)

    def _discover(self) -> list[Frame]:
        img_dir = self.root / "leftImg8bit" / self.split
        if not img_dir.is_dir():
            raise self._missing(img_dir, "image folder")
        gt_dir = self.root / "gtFine" / self.split
        labelled = self.split != "test"
        if labelled and not gt_dir.is_dir():
            raise self._missing(gt_dir, "label folder")
        frames = self._pair_frames(img_dir, gt_dir, lambda fid: (f"{fid}{TRAINIDS_SUFFIX}", f"{fid}{LABELIDS_SUFFIX}"),
                                   "<city>/*_leftImg8bit.{png,jpg,webp}", suffix=IMAGE_SUFFIX, labelled=labelled,
                                   rename_hint="rename it to the Cityscapes pattern or move it out")
        self.has_semantic = all(f.label is not None for f in frames)
        return frames

    def _load(self, frame: Frame) -> Sample:
        image = read_image(frame.image)
        semantic = None
        if frame.label is not None:
            lab = read_label(frame.label)
            if frame.label.name.endswith(TRAINIDS_SUFFIX):
                check_label_values(lab, (*range(19), IGNORE), frame.label, "Cityscapes labelTrainIds (0..18, 255)")
                semantic = lab.astype(np.uint8, copy=False)
            else:
                check_label_values(lab, LABELID_VALUES, frame.label, "Cityscapes labelIds (0..33, 255)")
                semantic = cityscapes_lut()[lab]
            check_same_size(image, semantic, frame.image, frame.label)
        return self._sample(frame, image, semantic=semantic)
