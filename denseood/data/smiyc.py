"""SegmentMeIfYouCan readers: RoadAnomaly21 (AnomalyTrack), RoadObstacle21 (ObstacleTrack), LostAndFound-testNoKnown.

Layouts, frame ids and split rules follow the official ``road-anomaly-benchmark`` (SegmentMeIfYouCan):

* ``dataset_AnomalyTrack/images/<fid>.jpg`` and ``dataset_ObstacleTrack/images/<fid>.webp`` (any image extension
  is accepted), labels ``labels_masks/<fid>_labels_semantic.png`` with 0 = not anomaly / road, 1 = anomaly /
  obstacle, 255 = void.
* splits by frame id, exactly as the benchmark defines them: AnomalyTrack ``validation`` = the 10 ids
  :data:`ANOMALY_VALIDATION_IDS` (``validation0000..0009``), ``test`` = the 100 ids :data:`ANOMALY_TEST_IDS`;
  ObstacleTrack by scene (``fid.split('_')[0]``): ``validation`` = scene ``validation`` minus the prefixes in
  :data:`OBSTACLE_VALIDATION_EXCLUDED`, ``test`` = the scenes :data:`OBSTACLE_SCENES` minus
  :data:`OBSTACLE_TEST_EXCLUDED_SCENES` (snowstorm and night excluded, as ``ObstacleTrack-test``). Official
  frames of neither split (e.g. snowstorm) are listed in ``self.excluded``; a frame whose id belongs to no split
  of the benchmark is a DatasetError naming it (never dropped silently), and so is a validation frame without its
  label. Test frames are read without labels (``Sample.ood_mask`` None), scored for submission.
* denseood extras read when present (any SMIYC root): ``labels_masks/<fid>_labels_instance.png`` (uint16 anomaly
  instance ids, 0 = none -> ``Sample.instances``) and ``labels_masks/<fid>_labels_trainids.png`` (uint8 inlier train
  ids, 255 at anomaly/void -> ``Sample.semantic``).
* LostAndFound object instances (``Sample.instances``, for OoDIS instance AP): LostAndFound's own
  ``gtCoarse/<split>/<scene>/<fid>_gtCoarse_instanceIds.png`` where present (each distinct id on obstacle pixels
  is one object), else the 8-connected components of each obstacle label id of ``_gtCoarse_labelIds.png``
  separately; ``Sample.meta["instance_source"]`` says which ("instanceIds" or "label components").

See docs/architecture.md.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import cv2
import numpy as np

from ..errors import DatasetError
from ..io import check_same_size, list_images, read_image, read_label
from ..progress import progress_bar
from .base import BaseDataset, Frame
from .sample import IGNORE, Sample

LABEL_SUFFIX = "_labels_semantic.png"
INSTANCE_SUFFIX = "_labels_instance.png"
TRAINIDS_SUFFIX = "_labels_trainids.png"

#: AnomalyTrack splits are explicit frame-id lists in road-anomaly-benchmark (datasets/tracks_extra.py,
#: ``RoadAnomalyByClass.FRAME_IDS``): ``AnomalyTrack-validation`` (10 ids) and ``AnomalyTrack-test`` (100 ids)
ANOMALY_VALIDATION_IDS = frozenset(f"validation{i:04d}" for i in range(10))
ANOMALY_TEST_IDS = frozenset(
    [f"zebra{i:04d}" for i in range(2)] + [f"sheep{i:04d}" for i in range(11)] + [f"rhino{i:04d}" for i in range(2)]
    + [f"pig{i:04d}" for i in range(2)] + ["lion0000", "leopard0000"] + [f"horse{i:04d}" for i in range(5)]
    + ["goose0000"] + [f"elephant{i:04d}" for i in range(12)] + [f"donkey{i:04d}" for i in range(2)]
    + [f"deer{i:04d}" for i in range(2)] + [f"cow{i:04d}" for i in range(14)] + ["cock0000"]
    + [f"camel{i:04d}" for i in range(2)] + ["bear0000"] + [f"airplane{i:04d}" for i in range(2)]
    + [f"boat_trailer{i:04d}" for i in range(5)] + [f"caravan{i:04d}" for i in range(8)]
    + [f"carriage{i:04d}" for i in range(8)] + ["scooter0000"] + [f"tractor{i:04d}" for i in range(6)]
    + ["coffin0000"] + [f"cones{i:04d}" for i in range(7)] + ["hay0000", "piano0000", "tent0000"])
#: denseood's synthetic world (data/synthetic/writer.py) writes its labelled frames as ``synth<NNNN>`` in the
#: AnomalyTrack layout; they form the validation split (a denseood extension: no official id has this form)
SYNTHETIC_VALIDATION_ID = re.compile(r"^synth[0-9]{4,}$")
#: ObstacleTrack frames are split by scene = ``fid.split('_')[0]`` (datasets/tracks.py, ``DatasetObstacleTrack``)
OBSTACLE_SCENES = frozenset({"curvy-street", "one-way-street", "gravel", "greyasphalt", "motorway", "paving",
                             "darkasphalt", "darkasphalt2", "snowstorm1", "snowstorm2", "driveway", "validation"})
#: ObstacleTrack-validation excludes these fid prefixes (official config; startswith match)
OBSTACLE_VALIDATION_EXCLUDED = ("validation_19", "validation_21", "validation_22", "validation_23", "validation_24",
                                "validation_25", "validation_26", "validation_27", "validation_28", "validation_29")
#: ObstacleTrack-test excludes these scenes (scene = fid.split('_')[0]): special weather, night, validation
OBSTACLE_TEST_EXCLUDED_SCENES = ("snowstorm1", "snowstorm2", "driveway", "validation")


def smiyc_layout(track_folder: str) -> str:
    """Expected layout text of one SMIYC track (printed in errors)."""
    return (f"  ROOT/{track_folder}/images/<fid>.{{jpg,webp,png}}   (or ROOT = {track_folder})\n"
            f"  ROOT/{track_folder}/labels_masks/<fid>_labels_semantic.png   (validation frames; 0/1/255)\n"
            f"  optional: labels_masks/<fid>_labels_instance.png, labels_masks/<fid>_labels_trainids.png")


class SMIYCTrack(BaseDataset):
    """One SMIYC track in the official layout; ROOT may be the track folder itself or its parent."""

    track_folder = ""
    splits = ("validation", "test")
    default_split = "validation"
    default_protocol = "smiyc"
    class_set = "cityscapes"

    def __init__(self, root: str | os.PathLike, split: str | None = None, **kw) -> None:
        super().__init__(root, split, **kw)

    def _track_dir(self) -> Path:
        sub = self.root / self.track_folder
        if sub.is_dir():
            return sub
        other = {"dataset_AnomalyTrack", "dataset_ObstacleTrack"} - {self.track_folder}
        if (self.root / "images").is_dir() and self.root.name not in other:
            return self.root
        raise DatasetError(f"{self.name}: neither {sub}/images nor {self.root}/images exists.\n"
                           f"Expected layout:\n{self.LAYOUT}")

    #: the split rule in words, for the error on a frame of no split
    split_rule = ""

    def _split_of(self, fid: str) -> str | None:
        """The official split of frame ``fid``: "validation", "test", "" (an official frame of neither split, e.g.
        an excluded scene) or None (no split of the benchmark holds this id)."""
        raise NotImplementedError

    def _discover(self) -> list[Frame]:
        base = self._track_dir()
        img_dir, lab_dir = base / "images", base / "labels_masks"
        if self.split == "validation" and not lab_dir.is_dir():
            raise self._missing(lab_dir, "label folder")
        images = list_images(img_dir, hidden=False)
        if not images:
            raise self._empty(img_dir, "<fid>.{jpg,webp,png}")
        frames = []
        self.excluded: dict[str, str] = {}
        self.excluded_images: dict[str, tuple[str, Path]] = {}  # fid -> (its official split or "", image)
        unknown: list[str] = []
        for p in images:
            fid = p.stem
            split = self._split_of(fid)
            if split is None:
                unknown.append(p.name)
            elif split != self.split:
                self.excluded[fid] = f"official {split} frame" if split else "in no official split of this track"
                self.excluded_images[fid] = (split, p)
            elif split == "validation":
                label = lab_dir / f"{fid}{LABEL_SUFFIX}"
                if not label.is_file():
                    raise self._missing_label(p, label)
                frames.append(Frame(name=fid, image=p, label=label, semantic=lab_dir / f"{fid}{TRAINIDS_SUFFIX}",
                                    instances=lab_dir / f"{fid}{INSTANCE_SUFFIX}"))
            else:
                frames.append(Frame(name=fid, image=p))
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise DatasetError(f"{self.name}: {len(unknown)} image(s) under {img_dir} belong to no split of the "
                               f"benchmark: {shown}; {self.split_rule}. Rename or remove them (denseood never "
                               f"drops a frame silently)")
        if not frames:
            raise DatasetError(f"{self.name}: no {self.split} frames found under {base} (excluded: "
                               f"{len(self.excluded)}); expected layout:\n{self.LAYOUT}")
        self.has_ood_labels = self.split == "validation"
        self.has_semantic = self.has_ood_labels and all(f.semantic.is_file() for f in frames)
        return frames

    def _load(self, frame: Frame) -> Sample:
        image = read_image(frame.image)
        if frame.label is None:
            return self._sample(frame, image)
        ood = self._read_binary_mask(frame, image)
        semantic, instances = self._read_extras(frame, image)
        return self._sample(frame, image, ood_mask=ood, semantic=semantic, instances=instances)


class SMIYCAnomalyTrack(SMIYCTrack):
    """RoadAnomaly21 (``smiyc-anomaly``): 10 labelled validation frames, 100 test frames."""

    name = "smiyc-anomaly"
    track_folder = "dataset_AnomalyTrack"
    MARKERS = ("dataset_AnomalyTrack",)
    LAYOUT = smiyc_layout(track_folder)
    component_sizes = (500, 100)

    split_rule = ("official AnomalyTrack ids are validation0000..validation0009 (validation) and the 100 test ids "
                  "of road-anomaly-benchmark, e.g. cow0000, zebra0000")

    def _split_of(self, fid: str) -> str | None:
        if fid in ANOMALY_VALIDATION_IDS:
            return "validation"
        return "test" if fid in ANOMALY_TEST_IDS else None


class SMIYCObstacleTrack(SMIYCTrack):
    """RoadObstacle21 (``smiyc-obstacle``): 30 labelled validation frames, 327 test frames."""

    name = "smiyc-obstacle"
    track_folder = "dataset_ObstacleTrack"
    MARKERS = ("dataset_ObstacleTrack",)
    LAYOUT = smiyc_layout(track_folder)
    component_sizes = (50, 10)
    split_rule = ("an ObstacleTrack id starts with its scene and '_', the scene one of "
                  + ", ".join(sorted(OBSTACLE_SCENES)))

    def _split_of(self, fid: str) -> str | None:
        scene = fid.split("_")[0]
        if scene not in OBSTACLE_SCENES:
            return None
        if scene == "validation":
            return "" if fid.startswith(OBSTACLE_VALIDATION_EXCLUDED) else "validation"
        return "" if scene in OBSTACLE_TEST_EXCLUDED_SCENES else "test"


# ------------------------------------------------------------------------------------------------------------
# LostAndFound (SMIYC "LostAndFound-testNoKnown")

LAF_IMAGE_SUFFIX = "_leftImg8bit"
LAF_LABEL_SUFFIX = "_gtCoarse_labelIds.png"
LAF_INSTANCE_SUFFIX = "_gtCoarse_instanceIds.png"
#: official LostAndFound-test has 1203 frames; the benchmark drops these indices (of the fid-sorted list) because
#: their labels are empty (np.count_nonzero(label) == 0)
LAF_TEST_LENGTH = 1203
LAF_TEST_INVALID_INDICES = (17, 37, 55, 72, 91, 110, 129, 153, 174, 197, 218, 353, 490, 618, 686, 792, 793)
#: "noKnown": frames showing known classes (children, bicycles) are dropped by fid prefix (official config)
LAF_NO_KNOWN_EXCLUDED_PREFIXES = ("15_Rechbergstr_Deckenpfronn", "01_Hanns_Klemm_Str_45_000006",
                                  "01_Hanns_Klemm_Str_45_000007", "10_Schlossberg_9_000004")


def laf_label_to_ood(lab: np.ndarray) -> np.ndarray:
    """LostAndFound labelIds -> ood mask: 1 (free space / road) -> 0, 2..200 (obstacles) -> 1, everything else
    (0 unlabeled, ego vehicle, > 200) -> 255. ``lab``: (H,W) uint8/uint16; returns (H,W) uint8."""
    out = np.full(lab.shape, IGNORE, dtype=np.uint8)
    out[lab == 1] = 0
    out[(lab >= 2) & (lab <= 200)] = 1
    return out


def laf_label_components(lab: np.ndarray) -> np.ndarray:
    """Object instances of a LostAndFound labelIds image without an instanceIds file: the 8-connected components
    of each obstacle label id (2..200) separately, so touching objects of different ids stay apart.
    ``lab``: (H,W) uint8/uint16; returns (H,W) int32 ids 1..K (0 = no obstacle)."""
    out = np.zeros(lab.shape, np.int32)
    n = 0
    for v in np.unique(lab[(lab >= 2) & (lab <= 200)]):
        k, comp = cv2.connectedComponents((lab == v).astype(np.uint8), connectivity=8)
        out[comp > 0] = comp[comp > 0] + n
        n += k - 1
    return out


def read_frame_list(path: str | os.PathLike) -> list[str]:
    """Frame ids from a text file: one id per line (``<fid>`` without ``_leftImg8bit.png``), '#' starts a comment."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"frame list file {path} not found; give a text file with one frame id per line")
    ids = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(line)
    if not ids:
        raise DatasetError(f"frame list file {path} holds no frame ids")
    return ids


class LostAndFoundDataset(BaseDataset):
    """LostAndFound in its original layout (``smiyc-laf``), labels mapped by :func:`laf_label_to_ood`.

    Splits: ``testNoKnown`` (default; SMIYC's LostAndFound-testNoKnown: the test split minus frames with empty
    labels minus the known-class scenes :data:`LAF_NO_KNOWN_EXCLUDED_PREFIXES`), ``test`` (every test frame),
    ``train``. Frames with empty labels are found by the official index list when the test folder holds exactly
    the 1203 official frames, otherwise by reading the labels (count_nonzero == 0, the official definition).
    The dropped frames and the reason are in ``self.excluded``.

    ``frame_list``: optional text file of frame ids (one per line); when given, the split holds exactly these
    frames (sorted) and the built-in noKnown rule is not applied. ``open_dataset("smiyc-laf", root, "test",
    frame_list="noKnown.txt")``. Component sizes are the ObstacleTrack ones (50, 10), as the benchmark scores
    LostAndFound with SegEval-ObstacleTrack.
    """

    name = "smiyc-laf"
    splits = ("testNoKnown", "test", "train")
    default_split = "testNoKnown"
    default_protocol = "smiyc"
    class_set = "cityscapes"
    component_sizes = (50, 10)
    has_ood_labels = True
    MARKERS = ("gtCoarse", "dataset_LostAndFound", "LostAndFound")
    LAYOUT = ("  ROOT/leftImg8bit/{train,test}/<NN_scene>/<fid>_leftImg8bit.{png,webp,jpg}\n"
              "  ROOT/gtCoarse/{train,test}/<NN_scene>/<fid>_gtCoarse_labelIds.png\n"
              "  optional: ROOT/gtCoarse/{train,test}/<NN_scene>/<fid>_gtCoarse_instanceIds.png (object instances)\n"
              "  (ROOT may also contain dataset_LostAndFound/ holding these folders)")

    def __init__(self, root: str | os.PathLike, split: str | None = None, *,
                 frame_list: str | os.PathLike | None = None, **kw) -> None:
        self.frame_list = Path(frame_list) if frame_list is not None else None
        super().__init__(root, split, **kw)

    def _laf_root(self) -> Path:
        for cand in (self.root, self.root / "dataset_LostAndFound", self.root / "LostAndFound"):
            if (cand / "leftImg8bit").is_dir():
                return cand
        raise self._missing(self.root / "leftImg8bit", "image folder")

    def _discover(self) -> list[Frame]:
        base = self._laf_root()
        folder = "train" if self.split == "train" else "test"
        img_dir, gt_dir = base / "leftImg8bit" / folder, base / "gtCoarse" / folder
        if not img_dir.is_dir():
            raise self._missing(img_dir, "image folder")
        if not gt_dir.is_dir():
            raise self._missing(gt_dir, "label folder")
        frames = self._pair_frames(img_dir, gt_dir, lambda fid: (f"{fid}{LAF_LABEL_SUFFIX}",),
                                   "<NN_scene>/*_leftImg8bit.{png,webp,jpg}", suffix=LAF_IMAGE_SUFFIX)
        frames = sorted((dataclasses.replace(f, instances=f.label.with_name(f"{f.name}{LAF_INSTANCE_SUFFIX}"))
                         for f in frames), key=lambda f: f.name)
        self.excluded: dict[str, str] = {}
        if self.frame_list is not None:
            return self._apply_frame_list(frames)
        if self.split == "testNoKnown":
            frames = self._no_known(frames)
        return frames

    def _apply_frame_list(self, frames: list[Frame]) -> list[Frame]:
        wanted = read_frame_list(self.frame_list)
        by_name = {f.name: f for f in frames}
        missing = [w for w in wanted if w not in by_name]
        if missing:
            raise DatasetError(f"{self.name}: frame list {self.frame_list} names {len(missing)} frame(s) not found in "
                               f"split '{self.split}' under {self.root}, e.g. {missing[:3]}")
        keep = set(wanted)
        for f in frames:
            if f.name not in keep:
                self.excluded[f.name] = f"not in frame list {self.frame_list}"
        return [by_name[w] for w in sorted(keep)]

    def _no_known(self, frames: list[Frame]) -> list[Frame]:
        if len(frames) == LAF_TEST_LENGTH:
            invalid = {frames[i].name for i in LAF_TEST_INVALID_INDICES}
        else:
            invalid = {f.name for f in progress_bar(frames, desc="LostAndFound: finding empty labels", leave=False)
                       if not np.count_nonzero(read_label(f.label))}
        kept = []
        for f in frames:
            if f.name in invalid:
                self.excluded[f.name] = "empty label (count_nonzero == 0)"
            elif f.name.startswith(LAF_NO_KNOWN_EXCLUDED_PREFIXES):
                self.excluded[f.name] = "known classes (children / bicycles)"
            else:
                kept.append(f)
        return kept

    def _load(self, frame: Frame) -> Sample:
        image = read_image(frame.image)
        lab = read_label(frame.label)
        check_same_size(image, lab, frame.image, frame.label)
        ood = laf_label_to_ood(lab)
        _, inst = self._read_extras(frame, image)
        sample = self._sample(frame, image, ood_mask=ood,
                              instances=laf_label_components(lab) if inst is None else np.where(ood == 1, inst, 0))
        sample.meta["instance_source"] = "label components" if inst is None else "instanceIds"
        return sample


def laf_scene_folder(fid: str) -> str | None:
    """'01_Hanns_Klemm_Str_45_000000_000080' -> '01_Hanns_Klemm_Str_45' (None if the id is not a LAF id)."""
    m = re.match(r"^([0-9]{2}_.*)_([0-9]{6})_([0-9]{6})$", fid)
    return m.group(1) if m else None
