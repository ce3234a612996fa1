"""Fixture trees in the official LostAndFound and SMIYC layouts holding the OoDIS frames (all 2751 names by default),
tiny images with a bright square on every other frame, and the python: model the submit tests run."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from denseood.data.oodis import read_expected_files

#: frame sizes per submission folder (different, so a mask written at the wrong frame's size is caught)
SIZES = {"fishyscapes": (16, 32), "roadanomaly": (24, 32), "roadobstacle": (20, 36)}

FACTORY = '''import torch
import torch.nn as nn


def make(num_classes=19):
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 3, stride=2, padding=1))
'''


def _image(hw: tuple[int, int], k: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    img = rng.integers(60, 120, (*hw, 3), dtype=np.uint8)
    if k % 2 == 0:
        img[4:10, 8:16] = (250, 30, 220)
    return img


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def write_trees(base: Path, expected: dict[str, list[str]] | None = None) -> tuple[Path, Path]:
    """LostAndFound root (frames alternately in train/ and test/, with gtCoarse labelIds) and SMIYC root (AnomalyTrack
    test ids, ObstacleTrack frames plus two validation frames) under ``base``; returns (laf, smiyc)."""
    expected = read_expected_files() if expected is None else expected
    laf, smiyc = base / "laf", base / "smiyc"
    lab = np.ones(SIZES["fishyscapes"], np.uint8)
    lab[4:10, 8:16] = 2
    for k, fid in enumerate(expected.get("fishyscapes", [])):
        split, scene = ("train", "test")[k % 2], fid.rsplit("_", 2)[0]
        _write(laf / "leftImg8bit" / split / scene / f"{fid}_leftImg8bit.png", _image(SIZES["fishyscapes"], k))
        _write(laf / "gtCoarse" / split / scene / f"{fid}_gtCoarse_labelIds.png", lab)
    for k, fid in enumerate(expected.get("roadanomaly", [])):
        _write(smiyc / "dataset_AnomalyTrack" / "images" / f"{fid}.png", _image(SIZES["roadanomaly"], k))
    for k, fid in enumerate(list(expected.get("roadobstacle", [])) + ["validation_1", "validation_2"]):
        _write(smiyc / "dataset_ObstacleTrack" / "images" / f"{fid}.png", _image(SIZES["roadobstacle"], k))
    for track in ("dataset_AnomalyTrack", "dataset_ObstacleTrack"):
        (smiyc / track / "images").mkdir(parents=True, exist_ok=True)
    return laf, smiyc


def subset(expected: dict[str, list[str]], n: int) -> dict[str, list[str]]:
    """The first ``n`` frames of each folder."""
    return {folder: fids[:n] for folder, fids in expected.items()}


def write_expected(path: Path, expected: dict[str, list[str]]) -> Path:
    """An expected-files list in the benchmark's format."""
    from denseood.data.oodis import txt_name

    path.write_text("".join(f"{folder}/{txt_name(folder, fid)}\n" for folder, fids in expected.items() for fid in fids))
    return path


def write_model(path: Path) -> str:
    """The python: factory module at ``path``; returns its spec."""
    path.write_text(FACTORY)
    return f"python:{path}:make"
