"""Fishyscapes readers: Lost&Found val (``fs-laf``) and Static val (``fs-static``); labels 0 inlier, 1 anomaly, 255 void.

Two layouts are accepted:

* community folder form (both): ``ROOT/images/<stem>.<ext>`` + ``ROOT/labels/<stem>.png`` with matching stems
  (the label may also be named ``<id>_fishy-labels.png`` / ``<id>_labels.png`` where ``<id>`` is the image stem
  without ``_leftImg8bit``);
* SMIYC form (``fs-laf``), as road-anomaly-benchmark reads ``FishyLAFAnomaly-val``: the frame ids are those of
  ``dataset_FishyLAF/labels/val/<fid>_fishy-labels.png`` and the images are the LostAndFound frames
  ``leftImg8bit/{train,test}/<NN_scene>/<fid>_leftImg8bit.{png,webp,jpg}`` of a LostAndFound root (``laf_root``
  argument, or ``ROOT/dataset_LostAndFound``, ``ROOT/LostAndFound``, or ROOT itself).

Pixel metrics: the Fishyscapes evaluator is exact (sort-based, pooled) -> ``default_protocol = "exact"``.
Component sizes: (500, 100), the SegEval-AnomalyTrack values the SMIYC benchmark uses for FishyLAFAnomaly-val.

See docs/architecture.md.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DatasetError
from ..io import list_images, read_image
from .base import BaseDataset, Frame
from .sample import Sample
from .smiyc import laf_scene_folder

FISHY_LABEL_SUFFIX = "_fishy-labels.png"
IMAGE_SUFFIXES_STRIPPED = ("_leftImg8bit",)
LABEL_NAME_PATTERNS = ("{stem}.png", "{key}.png", "{key}_fishy-labels.png", "{key}_labels.png")

FOLDER_LAYOUT = ("  ROOT/images/<stem>.{png,jpg,webp}\n"
                 "  ROOT/labels/<stem>.png   (or <id>_fishy-labels.png; values 0 inlier, 1 anomaly, 255 void)")


def _folder_pairs(ds: BaseDataset, root: Path) -> list[Frame]:
    """Frames of the images/ + labels/ folder form; every image needs its label."""
    img_dir, lab_dir = root / "images", root / "labels"
    if not img_dir.is_dir():
        raise ds._missing(img_dir, "image folder")
    if not lab_dir.is_dir():
        raise ds._missing(lab_dir, "label folder")
    images = list_images(img_dir, hidden=False)
    if not images:
        raise ds._empty(img_dir, "*.{png,jpg,webp}")
    frames = []
    for p in images:
        key = p.stem
        for suf in IMAGE_SUFFIXES_STRIPPED:
            if key.endswith(suf):
                key = key[: -len(suf)]
        cands = [lab_dir / pat.format(stem=p.stem, key=key) for pat in LABEL_NAME_PATTERNS]
        label = next((c for c in cands if c.is_file()), None)
        if label is None:
            raise ds._missing_label(p, cands[0])
        frames.append(Frame(name=key, image=p, label=label))
    return frames


class FishyscapesStatic(BaseDataset):
    """Fishyscapes Static val (30 frames) in the community folder form."""

    name = "fs-static"
    splits = ("val",)
    default_split = "val"
    default_protocol = "exact"
    class_set = "cityscapes"
    has_ood_labels = True
    LAYOUT = FOLDER_LAYOUT

    def __init__(self, root: str | os.PathLike, split: str | None = None, **kw) -> None:
        super().__init__(root, split, **kw)

    def _discover(self) -> list[Frame]:
        return _folder_pairs(self, self.root)

    def _load(self, frame: Frame) -> Sample:
        image = read_image(frame.image)
        return self._sample(frame, image, ood_mask=self._read_binary_mask(frame, image))


class FishyscapesLAF(FishyscapesStatic):
    """Fishyscapes Lost&Found val (100 frames): folder form, or FishyLAF labels + LostAndFound images."""

    name = "fs-laf"
    MARKERS = ("dataset_FishyLAF",)
    LAYOUT = (FOLDER_LAYOUT + "\n  or (SMIYC form):\n"
              "  ROOT/dataset_FishyLAF/labels/val/<fid>_fishy-labels.png   (or ROOT = dataset_FishyLAF)\n"
              "  LAF/leftImg8bit/{train,test}/<NN_scene>/<fid>_leftImg8bit.{png,webp,jpg}   with LAF = laf_root "
              "argument, ROOT/dataset_LostAndFound, ROOT/LostAndFound or ROOT")

    def __init__(self, root: str | os.PathLike, split: str | None = None, *,
                 laf_root: str | os.PathLike | None = None, **kw) -> None:
        self.laf_root = Path(laf_root).expanduser() if laf_root is not None else None
        super().__init__(root, split, **kw)

    def _discover(self) -> list[Frame]:
        if (self.root / "images").is_dir():
            return _folder_pairs(self, self.root)
        lab_dir = next((d for d in (self.root / "dataset_FishyLAF" / "labels" / "val", self.root / "labels" / "val")
                        if d.is_dir()), None)
        if lab_dir is None:
            raise DatasetError(f"{self.name}: found neither {self.root}/images (folder form) nor "
                               f"{self.root}/dataset_FishyLAF/labels/val (SMIYC form).\nExpected layout:\n{self.LAYOUT}")
        labels = sorted(p for p in lab_dir.iterdir() if p.is_file() and p.name.endswith(FISHY_LABEL_SUFFIX))
        if not labels:
            raise DatasetError(f"{self.name}: no *{FISHY_LABEL_SUFFIX} label files under {lab_dir}; "
                               f"expected layout:\n{self.LAYOUT}")
        laf = self._find_laf_root()
        frames = []
        for lab in labels:
            fid = lab.name[: -len(FISHY_LABEL_SUFFIX)]
            scene = laf_scene_folder(fid)
            if scene is None:
                raise DatasetError(f"{self.name}: label {lab} does not carry a LostAndFound frame id "
                                   f"(<NN_scene>_<seq:6>_<frame:6>); cannot find its image")
            cands = [laf / "leftImg8bit" / sp / scene / f"{fid}_leftImg8bit.{ext}"
                     for sp in ("train", "test") for ext in ("png", "webp", "jpg")]
            image = next((c for c in cands if c.is_file()), None)
            if image is None:
                raise DatasetError(f"{self.name}: label {lab} has no LostAndFound image; looked for "
                                   f"{cands[0]} (and the test split / .webp / .jpg variants)")
            frames.append(Frame(name=fid, image=image, label=lab))
        return frames

    def _find_laf_root(self) -> Path:
        cands = [self.laf_root] if self.laf_root is not None else [
            self.root / "dataset_LostAndFound", self.root / "LostAndFound", self.root,
            self.root.parent / "dataset_LostAndFound"]
        for c in cands:
            if (c / "leftImg8bit").is_dir():
                return c
        raise DatasetError(f"{self.name}: FishyLAF labels found but no LostAndFound images: none of "
                           f"{', '.join(str(c / 'leftImg8bit') for c in cands)} exists; pass laf_root=<LostAndFound root>.\n"
                           f"Expected layout:\n{self.LAYOUT}")
