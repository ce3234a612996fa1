"""``open_dataset(name, root, split, **kwargs)`` and the table of reader classes ``DATASETS``.

See docs/architecture.md.
"""
from __future__ import annotations

import inspect
import os

from ..errors import ConfigError
from .base import BaseDataset, Frame
from .cityscapes import CityscapesDataset
from .fishyscapes import FishyscapesLAF, FishyscapesStatic
from .folder import FolderDataset
from .sample import Sample
from .smiyc import SYNTHETIC_VALIDATION_ID, LostAndFoundDataset, SMIYCAnomalyTrack, SMIYCObstacleTrack
from .streethazards import StreetHazardsDataset


class _SyntheticTrain(CityscapesDataset):
    name = "synthetic"
    splits = ("train",)
    default_split = "train"


class _SyntheticVal(SMIYCAnomalyTrack):
    """The synthetic world's evaluation frames: SMIYC AnomalyTrack layout, frame ids ``synth<NNNN>`` (all
    validation); any other id belongs to no split."""

    name = "synthetic"
    splits = ("validation",)
    default_split = "validation"
    default_protocol = "streaming"
    component_sizes = (500, 100)
    split_rule = "the synthetic world's evaluation frames are named synth<NNNN>"

    def _split_of(self, fid: str) -> str | None:
        return "validation" if SYNTHETIC_VALIDATION_ID.match(fid) else None


class SyntheticDataset(BaseDataset):
    """The synthetic road world written by ``denseood.data.synthetic.write`` (reader name ``synthetic``).

    split ``train``: Cityscapes layout ``ROOT/leftImg8bit/train/synth/synth_000000_<idx:6>_leftImg8bit.png`` with
    ``ROOT/gtFine/train/synth/..._gtFine_labelTrainIds.png`` (read by :class:`CityscapesDataset`; no anomalies).
    split ``val`` (default): SMIYC AnomalyTrack layout ``ROOT/dataset_AnomalyTrack/images/synth<idx:4>.png`` with
    ``labels_masks/<fid>_labels_semantic.png`` (0/1/255) and the extras ``_labels_instance.png`` /
    ``_labels_trainids.png`` (read by :class:`SMIYCAnomalyTrack`). ``component_sizes`` default (500, 100); pass
    ``min_segment_size`` / ``min_instance_size`` for small images.
    """

    name = "synthetic"
    splits = ("train", "val")
    default_split = "val"
    class_set = "cityscapes"
    MARKERS = ("leftImg8bit/train/synth", "dataset_AnomalyTrack")
    LAYOUT = ("  train: ROOT/leftImg8bit/train/synth/synth_000000_<idx>_leftImg8bit.png + "
              "ROOT/gtFine/train/synth/synth_000000_<idx>_gtFine_labelTrainIds.png\n"
              "  val:   ROOT/dataset_AnomalyTrack/images/synth<idx>.png + "
              "ROOT/dataset_AnomalyTrack/labels_masks/synth<idx>_labels_semantic.png")

    def __init__(self, root: str | os.PathLike, split: str | None = None, **kw) -> None:
        self._kw = kw
        super().__init__(root, split, **kw)

    def _discover(self) -> list[Frame]:
        if self.split == "train":
            inner: BaseDataset = _SyntheticTrain(self.root, "train", **self._kw)
        else:
            inner = _SyntheticVal(self.root, "validation", **self._kw)
        self._inner = inner
        for attr in ("has_ood_labels", "has_semantic", "component_sizes", "default_protocol"):
            setattr(self, attr, getattr(inner, attr))
        return inner.frames

    def _load(self, frame: Frame) -> Sample:
        s = self._inner._load(frame)
        s.meta["split"] = self.split
        return s


DATASETS: dict[str, type[BaseDataset]] = {
    "cityscapes": CityscapesDataset,
    "smiyc-anomaly": SMIYCAnomalyTrack,
    "smiyc-obstacle": SMIYCObstacleTrack,
    "smiyc-laf": LostAndFoundDataset,
    "fs-laf": FishyscapesLAF,
    "fs-static": FishyscapesStatic,
    "streethazards": StreetHazardsDataset,
    "synthetic": SyntheticDataset,
    "folder": FolderDataset,
}

#: other names of a reader (``open_dataset("lostandfound", ...)`` is the LostAndFound reader ``smiyc-laf``)
ALIASES: dict[str, str] = {"lostandfound": "smiyc-laf"}

#: keyword arguments every reader accepts
COMMON_KWARGS = ("min_segment_size", "min_instance_size")


def reader_kwargs(name: str) -> tuple[str, ...]:
    """Keyword arguments ``open_dataset(name, ...)`` accepts besides root/split."""
    cls = _reader(name)
    own = [p.name for p in inspect.signature(cls.__init__).parameters.values()
           if p.kind is inspect.Parameter.KEYWORD_ONLY]
    return tuple(dict.fromkeys([*own, *COMMON_KWARGS]))


def _reader(name: str) -> type[BaseDataset]:
    try:
        return DATASETS[ALIASES.get(name, name)]
    except KeyError:
        raise ConfigError(f"unknown dataset '{name}'; valid names: {', '.join([*DATASETS, *ALIASES])}") from None


def open_dataset(name: str, root: str | os.PathLike, split: str | None = None, **kwargs) -> BaseDataset:
    """Open benchmark ``name`` at ``root`` (official layout); ``split`` None = the benchmark's evaluation split
    (cityscapes: val, smiyc-anomaly/-obstacle: validation, smiyc-laf: testNoKnown, fs-*: val, streethazards: test,
    synthetic: val, folder: all).

    Reader keyword arguments: all readers ``min_segment_size``, ``min_instance_size`` (component-metric sizes);
    smiyc-laf (alias ``lostandfound``) ``frame_list`` (text file of frame ids); fs-laf ``laf_root``; streethazards ``unlabeled="inlier"|"void"`` (the 0.1 ``unlabeled_as_inlier`` still works);
    folder ``recursive``. Unknown names or keywords raise ConfigError.
    """
    cls = _reader(name)
    allowed = reader_kwargs(name)
    bad = [k for k in kwargs if k not in allowed]
    if bad:
        raise ConfigError(f"dataset '{name}' does not take argument(s) {', '.join(bad)}; it accepts: "
                          f"{', '.join(allowed)}")
    return cls(root, split, **kwargs)
