"""``denseood submit --verify``: check an OoDIS submission (a zip or its folder) offline, one line per problem.

The rules are those of the benchmark's ``verify_submission.py`` (segmentation task), plus what its scorer needs
and what it would only discover on the server:

* the top level holds exactly the folders ``fishyscapes/``, ``roadanomaly/``, ``roadobstacle/`` (in a zip, as
  directory entries: the official verifier looks for those entries), and ``description.txt`` with
  ``key: value`` lines (``name``, ``paper_link``, ``code_link``);
* exactly the benchmark's txt files (missing and unexpected ones are both problems);
* every txt line is ``<mask png> <class id> <confidence>`` with a mask named ``<txt prefix>_instanceIds_<N>_1.png``
  (the scorer collects a frame's masks by that prefix), an integer class and a finite confidence, and the mask
  exists; every png is referenced by a txt;
* every frame has at least one instance: a txt with no line, or whose masks are all empty, fails;
* every mask has its frame's full resolution (when the frames' sizes are known, i.e. ``--laf``/``--smiyc`` are
  given or the writer checks its own output), and all masks of one frame have one size.

See docs/metrics.md (OoDIS submission).
"""
from __future__ import annotations

import io
import math
import os
import struct
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from denseood.data.oodis import FOLDERS, MASK_PATTERN, TXT_SUFFIX, mask_prefix, read_expected_files, txt_name

#: problems of one kind printed before "... and N more"
SHOWN_PER_KIND = 10
DESCRIPTION = "description.txt"


@dataclass
class Verdict:
    """The outcome of a check: ``problems`` (one line each; empty = valid), frames and instances counted."""

    problems: list[str] = field(default_factory=list)
    frames: int = 0
    instances: int = 0
    one_pixel_frames: int = 0  # frames whose only instance is one pixel (denseood's dummy where nothing was found)
    _kinds: dict = field(default_factory=lambda: defaultdict(int))

    def add(self, kind: str, message: str) -> None:
        self._kinds[kind] += 1
        if self._kinds[kind] <= SHOWN_PER_KIND:
            self.problems.append(message)

    def finish(self) -> "Verdict":
        for kind, n in self._kinds.items():
            if n > SHOWN_PER_KIND:
                self.problems.append(f"... and {n - SHOWN_PER_KIND} more problem(s) of this kind: {kind}")
        return self

    @property
    def ok(self) -> bool:
        return not self.problems


class _Tree:
    """The files of a submission zip or folder: ``files`` (set of posix paths), ``dirs`` (top-level folders),
    ``read``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_dir():
            self._zip = None
            self.files = {PurePosixPath(p.relative_to(path)).as_posix() for p in path.rglob("*") if p.is_file()}
            self.dirs = {p.name for p in path.iterdir() if p.is_dir()}
            self.dirs_without_entry: set[str] = set()
        else:
            self._zip = zipfile.ZipFile(path)
            infos = self._zip.infolist()
            self.files = {i.filename for i in infos if not i.is_dir()}
            self.dirs = {i.filename.split("/")[0] for i in infos if i.is_dir()}
            self.dirs_without_entry = {f.split("/")[0] for f in self.files if "/" in f} - self.dirs

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        return (self.path / name).read_bytes()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def png_size(data: bytes) -> tuple[int, int] | None:
    """(H, W) from a PNG's IHDR chunk, None when ``data`` is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", data[16:24])
    return int(h), int(w)


def png_pixels(data: bytes) -> int:
    """The mask's pixels the scorer counts (non-zero after conversion to 8-bit grey, as it reads masks)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return int(np.count_nonzero(np.asarray(im.convert("L"))))


def _check_top(tree: _Tree, v: Verdict) -> None:
    for folder in FOLDERS:
        if folder in tree.dirs_without_entry:
            v.add("folders", f"{folder}/: files but no directory entry in the zip (the official verifier needs one; "
                             f"re-zip with directory entries, e.g. `zip -r`)")
        elif folder not in tree.dirs:
            v.add("folders", f"{folder}/: missing folder")
    for d in sorted(tree.dirs - set(FOLDERS)):
        v.add("folders", f"{d}/: unexpected folder (the benchmark takes only {', '.join(FOLDERS)})")
    if DESCRIPTION not in tree.files:
        v.add("description", f"{DESCRIPTION}: missing (lines 'name: ...', 'paper_link: ...', 'code_link: ...')")
        return
    lines = tree.read(DESCRIPTION).decode("utf-8", "replace").strip().split("\n")
    for k, line in enumerate(lines, 1):
        if ":" not in line:
            v.add("description", f"{DESCRIPTION}, line {k}: {line!r} is not 'key: value' (the verifier fails on it)")


def _check_line(tree: _Tree, txt: str, k: int, line: str, prefix: str, v: Verdict) -> str | None:
    """One txt line -> the referenced png path (None when the line is bad; the problem is added)."""
    parts = line.split(" ")
    where = f"{txt}, line {k}"
    if len(parts) != 3:
        v.add("lines", f"{where}: {line!r} is not '<mask png> <class id> <confidence>'")
        return None
    name, cls, conf = parts
    if not MASK_PATTERN.match(name) or not name.startswith(prefix + "_instanceIds_") or "/" in name:
        v.add("mask names", f"{where}: mask name {name!r} is wrong; expected {prefix}_instanceIds_<N>_1.png")
        return None
    try:
        int(float(cls))
        ok = math.isfinite(float(conf))
    except ValueError:
        ok = False
    if not ok:
        v.add("lines", f"{where}: class {cls!r} / confidence {conf!r} are not numbers (finite confidence)")
        return None
    png = f"{txt.rsplit('/', 1)[0]}/{name}"
    if png not in tree.files:
        v.add("missing masks", f"{where}: mask {png} is not in the submission")
        return None
    return png


def _check_frame(tree: _Tree, txt: str, folder: str, fid: str, size: tuple[int, int] | None,
                 v: Verdict) -> set[str]:
    """One frame's txt and masks; returns the pngs it references."""
    text = tree.read(txt).decode("utf-8", "replace").strip()
    if not text:
        v.add("empty txt", f"{txt}: empty; every frame needs at least one instance (denseood submit writes a "
                           f"1-pixel dummy at the lowest confidence where nothing was found)")
        return set()
    prefix = mask_prefix(folder, fid)
    refs: set[str] = set()
    sizes: set[tuple[int, int]] = set()
    instances, pixels = 0, 0
    for k, line in enumerate(text.split("\n"), 1):
        png = _check_line(tree, txt, k, line.strip("\r"), prefix, v)
        if png is None:
            continue
        refs.add(png)
        data = tree.read(png)
        hw = png_size(data)
        if hw is None:
            v.add("masks", f"{png}: not a PNG file")
            continue
        sizes.add(hw)
        if size is not None and hw != size:
            v.add("mask size", f"{png}: {hw[0]}x{hw[1]}, but the frame is {size[0]}x{size[1]}; masks must have the "
                               f"frame's full resolution")
        n = png_pixels(data)
        instances, pixels = instances + (n > 0), pixels + n
    if size is None and len(sizes) > 1:
        v.add("mask size", f"{txt}: its masks have different sizes ({', '.join(f'{h}x{w}' for h, w in sorted(sizes))})")
    if refs and not instances:
        v.add("empty txt", f"{txt}: every mask it references is empty; the scorer needs at least one instance")
    v.instances += instances
    v.one_pixel_frames += instances == 1 and pixels == 1
    return refs


def verify_oodis(path: str | os.PathLike, expected: dict[str, list[str]] | None = None,
                 sizes: dict[str, tuple[int, int]] | None = None) -> Verdict:
    """Check the OoDIS submission at ``path`` (a .zip or its folder) by the rules of the module docstring.

    expected: ``{folder: [frame id]}`` (default: the benchmark's list). sizes: ``{txt path in the submission: (H,
    W)}`` of each frame's image, for the full-resolution rule (None: only one size per frame is checked)."""
    path = Path(path)
    expected = read_expected_files() if expected is None else expected
    v = Verdict()
    try:
        tree = _Tree(path)
    except (OSError, zipfile.BadZipFile) as e:
        v.add("archive", f"{path}: not a readable zip file or folder ({e})")
        return v.finish()
    try:
        _check_top(tree, v)
        want = {f"{folder}/{txt_name(folder, fid)}": (folder, fid) for folder, fids in expected.items() for fid in fids}
        txts = {f for f in tree.files if f.endswith(".txt") and f != DESCRIPTION}
        for txt in sorted(set(want) - txts):
            v.add("missing txt", f"{txt}: missing (a frame of the benchmark)")
        for txt in sorted(txts - set(want)):
            v.add("unexpected txt", f"{txt}: not a frame of the benchmark"
                  + ("" if txt.endswith(TXT_SUFFIX) else f" (txt names end with {TXT_SUFFIX})"))
        referenced: set[str] = set()
        for txt in sorted(txts & set(want)):
            folder, fid = want[txt]
            referenced |= _check_frame(tree, txt, folder, fid, None if sizes is None else sizes.get(txt), v)
            v.frames += 1
        for png in sorted(f for f in tree.files if f.endswith(".png") and f not in referenced):
            v.add("unreferenced png", f"{png}: not referenced by any txt file (the verifier refuses it)")
        for other in sorted(f for f in tree.files if not f.endswith((".png", ".txt"))):
            v.add("other files", f"{other}: not part of an OoDIS submission (only txt and png files)")
    finally:
        tree.close()
    return v.finish()
