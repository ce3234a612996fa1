"""OoDIS (the instance-level OOD benchmark): its frames, where they come from, and its submission file names.

OoDIS ranks OOD object instances on three test sets, one submission folder each:

* ``fishyscapes/``: every LostAndFound frame, train and test (2239; LostAndFound *train* is an OoDIS test set),
  one ``<id>_gtCoarse_instanceIds_pred.txt`` per frame, ``<id>`` = ``<scene>_<seq>_<frame>``;
* ``roadanomaly/``: the SMIYC AnomalyTrack test frames (100), ``<fid>_instanceIds_pred.txt``;
* ``roadobstacle/``: every SMIYC ObstacleTrack frame outside the validation scene (412),
  ``<fid>_instanceIds_pred.txt``.

The frame list is the benchmark's own ``assets/expected_files.txt`` (anomaly-benchmark-suite at 110a360), shipped
as ``data/assets/oodis_expected_files.txt`` (2751 lines ``<folder>/<txt name>``). Each txt line is
``<mask png> <class id> <confidence>``; masks are named ``<txt prefix>_instanceIds_<N>_1.png`` where the txt
prefix is the txt name without ``_instanceIds_pred.txt`` (the scorer gathers a frame's masks by that prefix).
See docs/metrics.md (OoDIS) and docs/architecture.md.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from ..errors import DatasetError

#: submission folder -> number of frames in the benchmark's list
FOLDERS = {"fishyscapes": 2239, "roadanomaly": 100, "roadobstacle": 412}
EXPECTED_FILES = Path(__file__).with_name("assets") / "oodis_expected_files.txt"
TXT_SUFFIX = "_instanceIds_pred.txt"
LAF_TXT_SUFFIX = "_gtCoarse" + TXT_SUFFIX
#: the official verifier's rule for a mask name
MASK_PATTERN = re.compile(r".*_instanceIds_\d+_1\.png$")
#: the class id written on every line: the scorer rewrites every line to 26 (Cityscapes "car", an instance class)
#: before scoring, so denseood writes that id too
CLASS_ID = 26


@dataclasses.dataclass(frozen=True)
class OoDISFrame:
    """One frame of the benchmark: its submission folder, its id and its image file."""

    folder: str
    fid: str
    image: Path

    @property
    def txt(self) -> str:
        """The frame's txt path inside the submission, e.g. ``roadanomaly/cow0000_instanceIds_pred.txt``."""
        return f"{self.folder}/{txt_name(self.folder, self.fid)}"

    def mask(self, n: int) -> str:
        """The n-th (1-based) mask's path inside the submission."""
        return f"{self.folder}/{mask_prefix(self.folder, self.fid)}_instanceIds_{n}_1.png"


def txt_name(folder: str, fid: str) -> str:
    """'fishyscapes', '01_Hanns_Klemm_Str_45_000000_000080' -> '01_..._000080_gtCoarse_instanceIds_pred.txt'."""
    return fid + (LAF_TXT_SUFFIX if folder == "fishyscapes" else TXT_SUFFIX)


def mask_prefix(folder: str, fid: str) -> str:
    """The prefix every mask of a frame starts with: the txt name without ``_instanceIds_pred.txt``."""
    return fid + ("_gtCoarse" if folder == "fishyscapes" else "")


def fid_of_txt(name: str) -> str:
    """A txt file name -> its frame id (the inverse of :func:`txt_name`)."""
    for suffix in (LAF_TXT_SUFFIX, TXT_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_expected_files(path: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """The benchmark's frame list: ``{folder: [frame id, ...]}`` from an expected-files text file (the shipped
    one by default; the official ``assets/expected_files.txt`` has the same format). Raises DatasetError naming
    the file and the first bad line."""
    path = Path(path) if path is not None else EXPECTED_FILES
    if not path.is_file():
        raise DatasetError(f"OoDIS frame list {path} not found; give the benchmark's assets/expected_files.txt")
    out: dict[str, list[str]] = {}
    for k, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        folder, _, name = line.partition("/")
        if folder not in FOLDERS or "/" in name or not name.endswith(TXT_SUFFIX):
            raise DatasetError(f"OoDIS frame list {path}, line {k}: {line!r} is not <folder>/<id>{TXT_SUFFIX} with "
                               f"folder one of {', '.join(FOLDERS)}")
        out.setdefault(folder, []).append(fid_of_txt(name))
    return out


def _laf_frames(root: Path) -> dict[str, Path]:
    from .smiyc import LostAndFoundDataset

    found: dict[str, Path] = {}
    for split in ("train", "test"):
        found.update({f.name: f.image for f in LostAndFoundDataset(root, split).frames})
    return found


def _smiyc_frames(root: Path) -> dict[str, dict[str, Path]]:
    from .smiyc import SMIYCAnomalyTrack, SMIYCObstacleTrack

    anomaly = SMIYCAnomalyTrack(root, "test")
    obstacle = SMIYCObstacleTrack(root, "test")
    road = {f.name: f.image for f in obstacle.frames}
    road.update({fid: p for fid, (split, p) in obstacle.excluded_images.items() if split != "validation"})
    return {"roadanomaly": {f.name: f.image for f in anomaly.frames}, "roadobstacle": road}


def _listed(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def find_frames(laf_root: str | os.PathLike, smiyc_root: str | os.PathLike,
                expected: dict[str, list[str]] | None = None) -> list[OoDISFrame]:
    """Every OoDIS frame found under the LostAndFound root and the SMIYC root, in the benchmark's order.

    The frames found must be exactly the benchmark's (``expected``, default the shipped list): a missing or an
    extra frame is a DatasetError naming them (per folder, the first few and the count)."""
    expected = read_expected_files() if expected is None else expected
    found = {"fishyscapes": _laf_frames(Path(laf_root)), **_smiyc_frames(Path(smiyc_root))}
    problems = []
    for folder in FOLDERS:
        want, have = expected.get(folder, []), found[folder]
        missing = [f for f in want if f not in have]
        extra = sorted(set(have) - set(want))
        if missing:
            problems.append(f"{folder}: {len(missing)} benchmark frame(s) not found ({_listed(missing)})")
        if extra:
            problems.append(f"{folder}: {len(extra)} frame(s) not in the benchmark's list ({_listed(extra)})")
    if problems:
        raise DatasetError("the frames under --laf/--smiyc do not match the OoDIS frame list: " + "; ".join(problems)
                           + ". Give the complete official LostAndFound (train and test) and SMIYC trees")
    return [OoDISFrame(folder, fid, found[folder][fid]) for folder in FOLDERS for fid in expected.get(folder, [])]
