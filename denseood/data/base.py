"""Base class of every reader: frames are discovered once at construction (paths only), and every
``__getitem__`` reads, validates and converts one frame from disk into a :class:`Sample`.

Subclasses set the class attributes (``name``, ``splits``, ``default_split``, ``LAYOUT``, ...) and implement
``_discover() -> list[Frame]`` and ``_load(frame) -> Sample``. Readers whose labels mirror the image folder
(``label_dir/<rel>/<name>``) build their frames with :meth:`BaseDataset._pair_frames`.

See docs/architecture.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Iterator

import numpy as np
import torch

from ..errors import ConfigError, DatasetError
from ..io import check_label_values, check_same_size, list_images, read_label
from .classes import CLASS_SETS
from .sample import IGNORE, Sample


@dataclass(frozen=True)
class Frame:
    """Paths of one frame. ``label``: the benchmark's own label file; ``semantic`` / ``instances``: optional extras."""

    name: str
    image: Path
    label: Path | None = None
    semantic: Path | None = None
    instances: Path | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)


class BaseDataset(torch.utils.data.Dataset):
    """A benchmark split on disk; ``ds[i] -> Sample`` (read from disk on every call, no caching).

    Attributes: ``name``, ``split``, ``root`` (Path), ``has_ood_labels``, ``has_semantic``, ``class_set``,
    ``num_classes``, ``class_names``, ``component_sizes`` ((min_segment_size, min_instance_size) of the SMIYC
    component metrics; (500, 100) = AnomalyTrack default, also used for benchmarks without an official value),
    ``default_protocol``, ``names`` (frame ids), ``image_paths``.
    """

    name: str = "base"
    splits: tuple[str, ...] = ()
    default_split: str = ""
    #: human-readable expected layout, printed in every "missing" error
    LAYOUT: str = ""
    #: sub-paths whose presence shows a partial copy of this layout (``data.inventory`` names what is missing)
    MARKERS: tuple[str, ...] = ()
    has_ood_labels: bool = False
    has_semantic: bool = False
    class_set: str | None = None
    component_sizes: tuple[int, int] = (500, 100)
    default_protocol: str = "streaming"

    def __init__(self, root: str | os.PathLike, split: str | None = None, *,
                 min_segment_size: int | None = None, min_instance_size: int | None = None) -> None:
        self.root = Path(root).expanduser()
        split = self.default_split if split is None else str(split)
        if split not in self.splits:
            raise ConfigError(f"{self.name}: unknown split '{split}'; valid splits: {', '.join(self.splits)}")
        self.split = split
        if not self.root.is_dir():
            raise DatasetError(f"{self.name}: dataset root {self.root} does not exist or is not a folder.\n"
                               f"Expected layout:\n{self.LAYOUT}")
        seg, inst = self.component_sizes
        if min_segment_size is not None:
            seg = int(min_segment_size)
        if min_instance_size is not None:
            inst = int(min_instance_size)
        if seg < 0 or inst < 0:
            raise ConfigError(f"{self.name}: min_segment_size/min_instance_size must be >= 0, got {seg}, {inst}")
        self.component_sizes = (seg, inst)
        self.frames: list[Frame] = self._discover()
        if not self.frames:
            raise DatasetError(f"{self.name}: no images found under {self.root} for split '{self.split}'; "
                               f"expected layout:\n{self.LAYOUT}")
        seen: dict[str, Path] = {}
        for fr in self.frames:
            if fr.name in seen:
                raise DatasetError(f"{self.name}: two images share the frame id '{fr.name}': {seen[fr.name]} and "
                                   f"{fr.image}; remove or rename one of them")
            seen[fr.name] = fr.image

    # -- to implement ---------------------------------------------------------------------------------------
    def _discover(self) -> list[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load(self, frame: Frame) -> Sample:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- public ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Sample:
        return self._load(self.frames[i])

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, root='{self.root}', frames={len(self)})"

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.frames]

    @property
    def image_paths(self) -> list[Path]:
        return [f.image for f in self.frames]

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return CLASS_SETS[self.class_set] if self.class_set else None

    @property
    def num_classes(self) -> int | None:
        names = self.class_names
        return len(names) if names is not None else None

    # -- helpers for subclasses -----------------------------------------------------------------------------
    def _missing(self, path: Path, what: str) -> DatasetError:
        return DatasetError(f"{self.name}: {what} {path} not found (split '{self.split}').\n"
                            f"Expected layout:\n{self.LAYOUT}")

    def _empty(self, path: Path, pattern: str) -> DatasetError:
        return DatasetError(f"{self.name}: no images found under {path} (looked for {pattern}, split "
                            f"'{self.split}'); expected layout:\n{self.LAYOUT}")

    def _missing_label(self, image: Path, *labels: Path) -> DatasetError:
        """Error for an image of a labelled split without its label; ``labels``: the accepted label paths."""
        shown = str(labels[0]) if len(labels) == 1 else "(" + " or ".join(map(str, labels)) + ")"
        return DatasetError(f"{self.name} split '{self.split}': image {image} has no label file {shown}; every frame "
                            f"of a labelled split needs its label (restore the label or remove the image)")

    def _pair_frames(self, img_dir: Path, label_dir: Path, label_names: Callable[[str], Sequence[str]], pattern: str,
                     *, suffix: str = "", rename_hint: str = "rename or move it out", labelled: bool = True,
                     folder_in_name: bool = False) -> list[Frame]:
        """Frames of every image under ``img_dir`` (recursive, hidden files skipped) paired with its label.

        An image ``img_dir/<rel>/<key><suffix>.<ext>`` gets the first existing file of
        ``label_dir/<rel>/<n>`` for ``n`` in ``label_names(key)``. ``suffix``: required end of the image stem (an
        image without it raises DatasetError with ``rename_hint``). ``labelled``: a missing label raises
        (:meth:`_missing_label`); otherwise the frame gets ``label=None``. Frame name: ``key``, or
        ``<rel parts>_<key>`` joined by '_' with ``folder_in_name``. No image at all raises :meth:`_empty` with
        ``pattern``.
        """
        frames = []
        for p in list_images(img_dir, recursive=True, hidden=False):
            key = strip_image_suffix(p, suffix)
            if key is None:
                raise DatasetError(f"{self.name}: {p} is in the image folder but its name does not end with "
                                   f"'{suffix}.<ext>'; {rename_hint}")
            rel = p.parent.relative_to(img_dir)
            candidates = [label_dir / rel / n for n in label_names(key)]
            label = next((c for c in candidates if c.is_file()), None)
            if label is None and labelled:
                raise self._missing_label(p, *candidates)
            name = "_".join((*rel.parts, key)) if folder_in_name else key
            frames.append(Frame(name=name, image=p, label=label))
        if not frames:
            raise self._empty(img_dir, pattern)
        return frames

    def _sample(self, frame: Frame, image: np.ndarray, **kw) -> Sample:
        meta = {"image_path": str(frame.image), "dataset": self.name, "split": self.split}
        if frame.label is not None:
            meta["label_path"] = str(frame.label)
        return Sample(image=image, name=frame.name, meta=meta, **kw)

    def _read_binary_mask(self, frame: Frame, image: np.ndarray) -> np.ndarray:
        """Read ``frame.label`` as a 0/1/255 OOD mask (uint8 (H,W)); checks values and size."""
        lab = read_label(frame.label)
        check_label_values(lab, (0, 1, IGNORE), frame.label, f"{self.name} (0 = inlier, 1 = anomaly, 255 = void)")
        check_same_size(image, lab, frame.image, frame.label)
        return lab.astype(np.uint8, copy=False)

    def _read_extras(self, frame: Frame, image: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Optional semantic train ids (uint8, 255 ignore) and anomaly instance ids (int32, 0 = none)."""
        semantic = instances = None
        if frame.semantic is not None and frame.semantic.is_file():
            semantic = read_label(frame.semantic)
            nc = self.num_classes if self.num_classes is not None else 255
            check_label_values(semantic, [*range(nc), IGNORE], frame.semantic,
                               f"{self.class_set or 'train-id'} train-id (0..{nc - 1}, 255 = ignore)")
            check_same_size(image, semantic, frame.image, frame.semantic)
            semantic = semantic.astype(np.uint8, copy=False)
        if frame.instances is not None and frame.instances.is_file():
            inst = read_label(frame.instances)
            if inst.dtype not in (np.uint8, np.uint16):
                raise DatasetError(f"instance file {frame.instances} has dtype {inst.dtype}; expected an 8- or "
                                   f"16-bit single-channel PNG of instance ids")
            check_same_size(image, inst, frame.image, frame.instances)
            instances = inst.astype(np.int32)
        return semantic, instances


def strip_image_suffix(path: Path, suffix: str) -> str | None:
    """``<fid><suffix>.<ext>`` -> fid (None when the stem does not end with ``suffix``)."""
    stem = path.stem
    if suffix and not stem.endswith(suffix):
        return None
    return stem[: len(stem) - len(suffix)] if suffix else stem
