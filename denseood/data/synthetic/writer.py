"""Disk writer of the synthetic world: a Cityscapes-layout training split and an SMIYC AnomalyTrack-layout
evaluation split under one root, plus the manifest ``synthetic.json`` (see :func:`write`). The official readers
(``open_dataset("synthetic", root, split)``) read it back.

See docs/architecture.md.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ...errors import ConfigError
from ...io import atomic_write_json, write_png
from ..classes import CITYSCAPES_LABELID_TO_TRAINID
from .anomalies import photo_names
from .scene import _check_size, generate, image_rng

GENERATOR_VERSION = "1"

_LABELIDS_OF_TRAINID = np.zeros(256, np.uint8)
for _lid, _tid in CITYSCAPES_LABELID_TO_TRAINID.items():
    _LABELIDS_OF_TRAINID[_tid] = _lid

TRAIN_IMAGE = "leftImg8bit/train/synth/synth_000000_{idx:06d}_leftImg8bit.png"
TRAIN_TRAINIDS = "gtFine/train/synth/synth_000000_{idx:06d}_gtFine_labelTrainIds.png"
TRAIN_LABELIDS = "gtFine/train/synth/synth_000000_{idx:06d}_gtFine_labelIds.png"
VAL_IMAGE = "dataset_AnomalyTrack/images/synth{idx:04d}.png"
VAL_SEMANTIC = "dataset_AnomalyTrack/labels_masks/synth{idx:04d}_labels_semantic.png"
VAL_INSTANCE = "dataset_AnomalyTrack/labels_masks/synth{idx:04d}_labels_instance.png"
VAL_TRAINIDS = "dataset_AnomalyTrack/labels_masks/synth{idx:04d}_labels_trainids.png"


def trainids_to_labelids(semantic: np.ndarray) -> np.ndarray:
    """(H,W) uint8 train ids (255 ignore) -> Cityscapes labelIds (ignore -> 0)."""
    return _LABELIDS_OF_TRAINID[semantic]


def _remove_stale(root: Path, n_train: int, n_val: int) -> None:
    """Delete generator files of an earlier, larger write (exact generator names only) so the root matches the manifest."""
    for pattern, n in ((TRAIN_IMAGE, n_train), (TRAIN_TRAINIDS, n_train), (TRAIN_LABELIDS, n_train),
                       (VAL_IMAGE, n_val), (VAL_SEMANTIC, n_val), (VAL_INSTANCE, n_val), (VAL_TRAINIDS, n_val)):
        folder = root / os.path.dirname(pattern)
        if not folder.is_dir():
            continue
        name = os.path.basename(pattern)
        rx = re.compile("^" + re.escape(name).replace(re.escape("{idx:06d}"), r"(\d{6})").replace(re.escape("{idx:04d}"), r"(\d{4,})") + "$")
        for p in folder.iterdir():
            mt = rx.match(p.name)
            if mt and int(mt.group(1)) >= n:
                p.unlink()


def write(root: str | os.PathLike, n_train: int, n_val: int, seed: int = 0, size: tuple[int, int] = (256, 512),
          progress: bool = True) -> dict:
    """Write the synthetic world under ``root`` and return its manifest (also written to ROOT/synthetic.json, last).

    train (no anomalies, Cityscapes layout): leftImg8bit/train/synth/synth_000000_<idx:06d>_leftImg8bit.png,
      gtFine/train/synth/..._gtFine_labelTrainIds.png (uint8, 255 ignore) and ..._gtFine_labelIds.png (ignore -> 0).
    val (anomalies, SMIYC AnomalyTrack layout): dataset_AnomalyTrack/images/synth<idx:04d>.png and labels_masks/
      synth<idx:04d>_labels_semantic.png (uint8 0/1/255), _labels_instance.png (uint16), _labels_trainids.png
      (uint8 train ids, 255 at anomaly and void).
    Image i of a split depends only on (seed, split, i); same seed -> byte-identical files.
    """
    from ...progress import progress_bar

    H, W = _check_size(size)
    for name, v in (("n_train", n_train), ("n_val", n_val)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"synthetic {name} must be an integer >= 0, got {v!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"synthetic seed must be an integer >= 0, got {seed!r}")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"synthetic root {root} exists and is not a folder; pass a folder path")
    root.mkdir(parents=True, exist_ok=True)
    if (root / "synthetic.json").is_file():  # only a world denseood wrote itself (its manifest) loses stale frames
        _remove_stale(root, int(n_train), int(n_val))
    photos = photo_names()
    n_anom = 0
    with progress_bar(total=int(n_train) + int(n_val), desc="synthetic world", unit="img", disable=not progress) as bar:
        for i in range(int(n_train)):
            g = generate(image_rng(seed, "train", i), (H, W), anomalies=False)
            write_png(root / TRAIN_IMAGE.format(idx=i), g["image"])
            write_png(root / TRAIN_TRAINIDS.format(idx=i), g["semantic"])
            write_png(root / TRAIN_LABELIDS.format(idx=i), trainids_to_labelids(g["semantic"]))
            bar.update(1)
        for i in range(int(n_val)):
            g = generate(image_rng(seed, "val", i), (H, W), anomalies=True)
            trainids = g["semantic"].copy()
            trainids[g["ood_mask"] == 255] = 255
            write_png(root / VAL_IMAGE.format(idx=i), g["image"])
            write_png(root / VAL_SEMANTIC.format(idx=i), g["ood_mask"])
            write_png(root / VAL_INSTANCE.format(idx=i), g["instances"].astype(np.uint16))
            write_png(root / VAL_TRAINIDS.format(idx=i), trainids)
            n_anom += int(g["instances"].max())
            bar.update(1)
    manifest = {
        "generator": "denseood.data.synthetic",
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "size": [H, W],
        "n_train": int(n_train),
        "n_val": int(n_val),
        "n_val_anomalies": n_anom,
        "splits": {"train": "cityscapes layout: leftImg8bit/train/synth, gtFine/train/synth",
                   "val": "smiyc AnomalyTrack layout: dataset_AnomalyTrack/images, dataset_AnomalyTrack/labels_masks"},
        "photos": photos,
    }
    atomic_write_json(root / "synthetic.json", manifest)
    return manifest
