"""Plain image folder (no labels): ``folder`` reader for scoring / segmenting any images.

See docs/architecture.md.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from ..errors import DatasetError
from ..io import IMAGE_EXTENSIONS, list_images, read_image
from .base import BaseDataset, Frame
from .sample import Sample


class FolderDataset(BaseDataset):
    """Every image (png/jpg/jpeg/webp/bmp/tif) in ROOT (``recursive=True``: also in subfolders); ROOT may also be a
    single image file. Frame ids are the paths relative to ROOT without extension, '/' replaced by '__' (the
    extension is kept when two files differ only by it). Samples carry only ``image`` and ``name``."""

    name = "folder"
    splits = ("all",)
    default_split = "all"
    has_ood_labels = False
    has_semantic = False
    class_set = None
    LAYOUT = "  ROOT/*.{png,jpg,jpeg,webp,bmp,tif}   (recursive=True: also ROOT/**/)"

    def __init__(self, root: str | os.PathLike, split: str | None = None, *, recursive: bool = False, **kw) -> None:
        self.recursive = bool(recursive)
        path = Path(root).expanduser()
        self._file = path if path.is_file() else None
        super().__init__(path.parent if self._file is not None else path, split, **kw)

    def _discover(self) -> list[Frame]:
        if self._file is not None:
            if self._file.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DatasetError(f"{self._file} is not an image file (expected one of {', '.join(IMAGE_EXTENSIONS)})")
            return [Frame(name=self._file.stem, image=self._file)]
        files = list_images(self.root, recursive=self.recursive, hidden=False)
        if not files:
            hint = "" if self.recursive else " (images in subfolders are read only with recursive=True)"
            raise DatasetError(f"folder {self.root} is empty: no image files ({', '.join(IMAGE_EXTENSIONS)}) found"
                               f"{hint}")
        rels = [p.relative_to(self.root) for p in files]
        keys = ["__".join(r.with_suffix("").parts) for r in rels]
        dup = Counter(keys)
        names = [k if dup[k] == 1 else "__".join(r.parts) for k, r in zip(keys, rels)]
        return [Frame(name=n, image=p) for n, p in zip(names, files)]

    def _load(self, frame: Frame) -> Sample:
        return self._sample(frame, read_image(frame.image))
