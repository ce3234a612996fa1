"""``denseood submit oodis``: write ``--out/oodis.zip`` for the OoDIS benchmark and check it offline.

Flow: the options are validated once (:class:`OoDISOptions`); the frames under ``--laf``/``--smiyc`` must be
exactly the benchmark's (:func:`denseood.data.oodis.find_frames`); each frame's objects are written into
``--out/oodis/<folder>/`` (masks first, the frame's txt last, each file atomically), so a killed run keeps every
finished frame and the same command resumes it; ``description.txt`` is written; the zip is built in a temporary
file, checked with :func:`~denseood.commands.submit.verify.verify_oodis` (with every frame's size) and only then
renamed to ``oodis.zip``; the manifest is marked complete last. See docs/metrics.md (OoDIS submission).
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from denseood.data.oodis import CLASS_ID, FOLDERS, OoDISFrame, find_frames, mask_prefix, read_expected_files
from denseood.errors import ConfigError, OutputError
from denseood.scores.names import DEFAULT_SCORE

from .names import OBJECTS

WORK = "oodis"      # the unzipped submission under --out
ZIP = "oodis.zip"


@dataclasses.dataclass(frozen=True)
class OoDISOptions:
    """Everything ``submit oodis`` needs, checked once in :meth:`check` (below it, nothing is re-validated)."""

    laf: Path
    smiyc: Path
    checkpoint: str
    out: Path
    objects: str = "s2m"
    score: str = DEFAULT_SCORE
    threshold: float | None = None
    min_size: int = 10
    prompter: str = "auto"
    prompt_model: str = "grabcut"
    name: str = "denseood"
    paper_link: str = ""
    code_link: str = ""
    expected_files: Path | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 2
    input_size: Any = "model"
    work_size: int = 2048
    max_pixels: float = 100_000_000
    weights: str | None = None
    trust_code: bool = False
    overwrite: bool = False
    progress: bool = True

    def check(self) -> "OoDISOptions":
        from denseood.scores import parse_scores

        if self.objects not in OBJECTS:
            raise ConfigError(f"--objects {self.objects!r}: choose one of {', '.join(OBJECTS)}")
        if self.objects == "components" and self.threshold is None:
            raise ConfigError("--objects components needs --threshold T (the anomaly-map value above which a pixel "
                              "belongs to an object; declare it, it is not tuned on the test frames)")
        if self.objects != "components" and self.threshold is not None:
            raise ConfigError(f"--threshold applies to --objects components; {self.objects} objects need no threshold")
        for key in ("name", "paper_link", "code_link"):
            if "\n" in getattr(self, key):
                raise ConfigError(f"--{key.replace('_', '-')} must be one line")
        parse_scores(self.score)
        for what, root in (("--laf", self.laf), ("--smiyc", self.smiyc)):
            if not Path(root).is_dir():
                raise ConfigError(f"{what} {root} is not a folder; give the dataset root in its official layout")
        return self

    def fingerprint(self) -> dict:
        """The options that change what is written (a resumed run must have the same)."""
        keys = ("checkpoint", "objects", "score", "threshold", "min_size", "prompter", "prompt_model", "input_size",
                "work_size", "weights")
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in ((k, getattr(self, k)) for k in keys)}


def description(opts: OoDISOptions) -> str:
    """description.txt: ``name:``, ``paper_link:``, ``code_link:`` lines."""
    return f"name: {opts.name}\npaper_link: {opts.paper_link}\ncode_link: {opts.code_link}\n"


def frame_txt(frame: OoDISFrame, conf: np.ndarray) -> str:
    """The frame's txt: one ``<mask png> <class> <confidence>`` line per mask (masks numbered 1..N)."""
    return "".join(f"{Path(frame.mask(n)).name} {CLASS_ID} {float(c):.8g}\n" for n, c in enumerate(conf, 1))


def dummy(hw: tuple[int, int], lowest: float) -> tuple[np.ndarray, np.ndarray]:
    """The 1-pixel instance (top-left) at the lowest confidence, for a frame where nothing was found."""
    m = np.zeros((1, *hw), bool)
    m[0, 0, 0] = True
    return m, np.array([lowest])


def _stale_masks(work: Path, frame: OoDISFrame) -> list[Path]:
    """Masks of a frame left by a killed run (before its txt was written)."""
    pat = re.compile(re.escape(mask_prefix(frame.folder, frame.fid)) + r"_instanceIds_\d+_1\.png$")
    folder = work / frame.folder
    return [p for p in folder.glob(mask_prefix(frame.folder, frame.fid) + "_instanceIds_*.png") if pat.match(p.name)]


def write_frame(work: Path, frame: OoDISFrame, masks: np.ndarray, conf: np.ndarray, lowest: float) -> int:
    """Write one frame's masks (uint8 0/255 PNGs at the frame's size) and then its txt; returns the instances."""
    from denseood.io import atomic_write_text, write_png

    for p in _stale_masks(work, frame):
        p.unlink()
    if not len(masks):
        masks, conf = dummy(masks.shape[1:], lowest)
    for n, m in enumerate(masks, 1):
        write_png(work / frame.mask(n), m.astype(np.uint8) * 255)
    atomic_write_text(work / frame.txt, frame_txt(frame, conf))
    return len(masks)


def build_zip(work: Path, target: Path, frames: list[OoDISFrame]) -> None:
    """Zip the submission (folder entries, description.txt, every txt and the masks it lists) into ``target``."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for folder in FOLDERS:
            zf.writestr(zipfile.ZipInfo(f"{folder}/"), b"")
        zf.write(work / "description.txt", "description.txt")
        for fr in frames:
            zf.write(work / fr.txt, fr.txt)
            for line in (work / fr.txt).read_text().splitlines():
                rel = f"{fr.folder}/{line.split(' ')[0]}"
                zf.write(work / rel, rel, compress_type=zipfile.ZIP_STORED)  # PNGs are compressed already


def _open_run(opts: OoDISOptions):
    """The --out folder: new, resumed (an unfinished submit run with the same options) or replaced."""
    from denseood.outdir import open_output, read_manifest

    man = read_manifest(opts.out) if opts.out.is_dir() else None
    resume = bool(man and man.get("verb") == "submit" and not man.get("complete") and not opts.overwrite)
    if resume and man.get("options") != opts.fingerprint():
        raise ConfigError(f"--out {opts.out} holds an unfinished submission made with other options "
                          f"({man.get('options')}); rerun with those options to resume it, or pass --overwrite")
    info = {"verb": "submit", "benchmark": "oodis", "options": opts.fingerprint()}
    run = open_output(opts.out, opts.overwrite, stage=False, resume=resume, outputs=(ZIP,), info=info)
    return run, resume


def _producer(opts: OoDISOptions) -> Any:
    from denseood.models.sources import load_model

    from .objects import ComponentObjects, QueryObjectsSource, S2MObjects

    model = load_model(opts.checkpoint, map_location="cpu", weights=opts.weights, trust_code=opts.trust_code)
    common = dict(score=opts.score, device=opts.device, dtype=opts.dtype, input_size=opts.input_size,
                  batch_size=opts.batch_size, max_pixels=opts.max_pixels)
    if opts.objects == "components":
        return ComponentObjects(model, threshold=opts.threshold, min_size=opts.min_size, **common)
    if opts.objects == "queries":  # issue 21
        return QueryObjectsSource(model, **common)
    return S2MObjects(model, spec=opts.checkpoint, prompter=opts.prompter, prompt_model=opts.prompt_model,
                      work_size=opts.work_size, **common)


def frame_sizes(frames: list[OoDISFrame], max_pixels: float) -> dict[str, tuple[int, int]]:
    """{txt path: (H, W)} read from the image headers; refuses a frame over ``max_pixels`` before any work."""
    from denseood.infer.util import check_max_pixels
    from denseood.io import image_header_size, read_image

    sizes = {}
    for fr in frames:
        hw = image_header_size(fr.image) or read_image(fr.image).shape[:2]
        check_max_pixels(hw[0], hw[1], max_pixels, f"frame {fr.image}")
        sizes[fr.txt] = (int(hw[0]), int(hw[1]))
    return sizes


def _run_frames(opts: OoDISOptions, produce: Any, work: Path, todo: list[OoDISFrame], total: int) -> None:
    from ...progress import progress_bar

    from denseood.io import read_image

    with progress_bar(total=total, initial=total - len(todo), desc="submit oodis", unit="frame", dynamic_ncols=True,
              disable=not opts.progress) as bar:
        for start in range(0, len(todo), opts.batch_size):
            chunk = todo[start:start + opts.batch_size]
            images = [read_image(fr.image) for fr in chunk]
            for fr, (masks, conf) in zip(chunk, produce(images, [str(fr.image) for fr in chunk])):
                write_frame(work, fr, masks, conf, produce.lowest_confidence)
            bar.update(len(chunk))


def write_oodis(opts: OoDISOptions) -> dict:
    """Write and verify ``opts.out/oodis.zip`` (see the module docstring). Returns {"zip", "frames", "resumed",
    "instances", "dummies"}. Raises DatasetError (frames), ConfigError (options, --out), OutputError (a
    submission that fails the check: nothing is renamed to oodis.zip)."""
    from denseood.io import atomic_write_text

    from .verify import verify_oodis

    expected = read_expected_files(opts.expected_files)
    frames = find_frames(opts.laf, opts.smiyc, expected)
    sizes = frame_sizes(frames, opts.max_pixels)
    run, resumed = _open_run(opts)
    with run:
        work = opts.out / WORK
        todo = frames if opts.overwrite else [fr for fr in frames if not (work / fr.txt).is_file()]
        produce = _producer(opts) if todo else None  # the model loads before a previous run is removed
        run.remove_previous()
        if opts.overwrite and work.is_dir():
            shutil.rmtree(work)
        for folder in FOLDERS:
            (work / folder).mkdir(parents=True, exist_ok=True)
        if todo:
            _run_frames(opts, produce, work, todo, len(frames))
        atomic_write_text(work / "description.txt", description(opts))
        tmp = opts.out / f".{ZIP}.denseood-tmp-{os.getpid()}"
        try:
            build_zip(work, tmp, frames)
            verdict = verify_oodis(tmp, expected, sizes)
            if not verdict.ok:
                raise OutputError(f"the submission in {work} fails the check ({len(verdict.problems)} problem(s)), "
                                  f"first: {verdict.problems[0]}; oodis.zip was not written")
            os.replace(tmp, opts.out / ZIP)
        finally:
            tmp.unlink(missing_ok=True)
        run.commit({"frames": len(frames), "instances": verdict.instances})
    return {"zip": opts.out / ZIP, "frames": len(frames), "resumed": len(frames) - len(todo) if resumed else 0,
            "instances": verdict.instances, "dummies": verdict.one_pixel_frames}
