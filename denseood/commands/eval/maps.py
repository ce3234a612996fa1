"""``denseood eval --maps``: score precomputed anomaly maps, and the per-frame map files eval writes.

:class:`MapSource` stands in for the inference engine of :func:`~denseood.commands.eval.runner.evaluate`: it
yields (samples, {name: (b,H,W) maps}) batches read from a checked :class:`~denseood.data.maps.MapFolder`, so
map folders go through the same metric, component, submission and report code as a checkpoint. The maps are one
score, named after the folder (``--maps out/score_maps/jsd`` gives the row ``jsd``).

Files written per frame by ``evaluate``: :func:`save_score_map` (``--save-maps``: ``score_maps/<score>/<fid>.<ext>``
in ``--save-maps-format``, read back by ``--maps``) and :func:`write_submission` (unlabelled splits: the official
SegmentMeIfYouCan layout ``submission/anomaly_p/<method>/<dataset>/<fid>.hdf5``, dataset ``value``, float16, gzip 9,
as ``road_anomaly_benchmark.evaluation.Evaluation`` writes and reads it; ``<dataset>`` is the benchmark's
``name_for_persistence`` of the split, see :data:`SMIYC_PERSISTENCE`). See docs/architecture.md.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from denseood import dist
from denseood.data.maps import FORMAT_SIDECAR, H5_KEY, SAVE_FORMATS, MapFolder, to_float16, write_map
from denseood.errors import ConfigError
from denseood.io import atomic_write_json, write_hdf5
from denseood.scores.names import SCORES

#: folder name the official evaluator stores a split's maps under (``cfg.name_for_persistence`` or ``cfg.name``
#: in road_anomaly_benchmark/datasets/tracks*.py: AnomalyTrack-test frames are AnomalyTrack-all frames, every
#: ObstacleTrack split persists as ObstacleTrack-all, LostAndFound-testNoKnown as LostAndFound-test)
SMIYC_PERSISTENCE = {("smiyc-anomaly", "test"): "AnomalyTrack-all", ("smiyc-anomaly", "validation"): "AnomalyTrack-all",
                     ("smiyc-obstacle", "test"): "ObstacleTrack-all",
                     ("smiyc-obstacle", "validation"): "ObstacleTrack-all",
                     ("smiyc-laf", "test"): "LostAndFound-test", ("smiyc-laf", "testNoKnown"): "LostAndFound-test",
                     ("smiyc-laf", "train"): "LostAndFound-train"}
#: value range of the scores png16 can hold: pixel = round((value - lo) * floor(65535 / (hi - lo)))
PNG16_RANGES = {name: rec.value_range for name, rec in SCORES.items() if rec.value_range is not None}


# ----------------------------------------------------------------------------------------------- writers
def png16_scale(score: str) -> tuple[float, float]:
    """(scale, offset) of png16 maps of ``score``; ConfigError for a score of unbounded range."""
    if score not in PNG16_RANGES:
        raise ConfigError(f"--save-maps-format png16 holds bounded scores only ({', '.join(PNG16_RANGES)}); score "
                          f"{score!r} has no fixed range: use --save-maps-format npy, npz or h5")
    lo, hi = PNG16_RANGES[score]
    return float(math.floor(65535 / (hi - lo))), lo


def check_save_format(fmt: str, scores: Sequence[str]) -> None:
    """Refuse an unknown --save-maps-format, or png16 for a score it cannot hold, before any inference."""
    if fmt not in SAVE_FORMATS:
        raise ConfigError(f"unknown --save-maps-format {fmt!r}; valid: {', '.join(SAVE_FORMATS)}")
    if fmt == "png16":
        for s in scores:
            png16_scale(s)


def save_score_map(out: Path, score: str, rel: Path, arr: np.ndarray, fmt: str) -> Path:
    """``out/score_maps/<score>/<rel><ext>``; for png16 also the sidecar with the scale and offset (once)."""
    folder = out / "score_maps" / score
    scale, offset = png16_scale(score) if fmt == "png16" else (None, 0.0)
    if fmt == "png16" and not (folder / FORMAT_SIDECAR).is_file():
        atomic_write_json(folder / FORMAT_SIDECAR, {"format": "png16", "value": "pixel / scale + offset",
                                                    "scale": scale, "offset": offset,
                                                    "read_with": f"--maps-scale {scale:g} --maps-offset {offset!r}"})
    return write_map(folder / (rel.parent / (rel.name + SAVE_FORMATS[fmt])), arr, fmt, scale, offset)


def smiyc_dataset_name(dataset: Any) -> str:
    """The evaluator's folder name of this split (:data:`SMIYC_PERSISTENCE`), else the reader's name."""
    name = getattr(dataset, "name", type(dataset).__name__)
    return SMIYC_PERSISTENCE.get((name, getattr(dataset, "split", None)), name)


def check_method(method: str | None) -> None:
    """Refuse a ``--method`` that is not one plain folder name (a path separator, '..', '.', absolute or empty):
    the submission must stay inside ``--out``."""
    if method is None:
        return
    m = str(method)
    if not m.strip() or m in (".", "..") or "/" in m or "\\" in m or "\0" in m or os.path.isabs(m):
        raise ConfigError(f"--method {method!r} must be one plain folder name (no '/', '\\', '..' or absolute "
                          f"path): it names submission/anomaly_p/<method>/ inside --out; e.g. --method my_model")


def submission_method(score: str, scores: Sequence[str], method: str | None) -> str:
    """``<method>`` of a score: ``method`` (``<method>_<score>`` when several scores share it), else the score."""
    if method is None:
        return score
    return method if len(scores) == 1 else f"{method}_{score}"


def write_submission(out: Path, dataset: Any, score: str, scores: Sequence[str], method: str | None, rel: Path,
                     arr: np.ndarray) -> Path:
    """One frame of the official submission: float16 (H,W) as dataset ``value`` of
    ``out/submission/anomaly_p/<method>/<dataset>/<fid>.hdf5`` (gzip 9)."""
    m = submission_method(score, scores, method)
    path = out / "submission" / "anomaly_p" / m / smiyc_dataset_name(dataset) / (rel.parent / (rel.name + ".hdf5"))
    return write_hdf5(path, to_float16(arr), H5_KEY, compression=9)


# ----------------------------------------------------------------------------------------------- source
class MapSource:
    """Engine-shaped reader of a map folder for :func:`~denseood.commands.eval.runner.evaluate`.

    ``run`` yields (samples, {score: float32 (b,H,W) tensor}) like ``Inference.run``; each map is checked against
    its frame's label size (image size for unlabelled frames).
    """

    dtype_name = "maps"
    input_size = None
    sliding_window = None
    overlap = None
    flip = False
    compiled = False

    def __init__(self, maps: MapFolder, score: str) -> None:
        self.maps, self.score = maps, score
        self.device = torch.device("cpu")
        self._seconds, self._images = 0.0, 0

    @property
    def stats(self) -> dict[str, float]:
        return {"images": self._images, "seconds": self._seconds, "peak_mem_mb": 0.0,
                "images_per_s": self._images / self._seconds if self._seconds > 0 else 0.0}

    def describe(self) -> dict[str, Any]:
        m = self.maps
        return {"folder": str(m.folder), "score": self.score, "formats": sorted(m.kinds), "scale": m.scale,
                "offset": m.offset, "higher_is_anomalous": m.higher_is_anomalous}

    def run(self, data: Dataset, batch_size: int = 4, workers: int = 2, sampler: Any = None,
            progress: bool = True) -> Iterator[tuple[list, dict[str, torch.Tensor]]]:
        from ...progress import progress_bar

        from denseood.dist import worker_init
        from denseood.infer import collate_samples

        dl = DataLoader(data, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=max(0, workers),
                        collate_fn=collate_samples, worker_init_fn=worker_init)
        with progress_bar(total=len(dl.sampler), desc="maps", unit="img", disable=not progress,
                          dynamic_ncols=True) as bar:
            for groups in dl:
                for samples, _ in groups:
                    t0 = time.perf_counter()
                    arrs = [self.maps.read(s.name, (s.ood_mask if s.ood_mask is not None else s.image).shape[:2])
                            for s in samples]
                    self._seconds += time.perf_counter() - t0
                    self._images += len(samples)
                    bar.update(len(samples))
                    yield samples, {self.score: torch.from_numpy(np.stack(arrs))}


def frame_names(data: Dataset) -> list[str]:
    """Frame ids of a dataset or a Subset of one (read from the frame list, no file is opened)."""
    if isinstance(data, Subset):
        names = frame_names(data.dataset)
        return [names[i] for i in data.indices]
    return list(data.names)


def open_map_source(dataset: Dataset, folder: str | os.PathLike, *, limit: int | None = None,
                    scale: float | None = None, offset: float = 0.0, higher_is_anomalous: bool = True,
                    name: str | None = None, precheck: bool = True) -> MapSource:
    """Check ``folder`` against the frames to score (the first ``limit`` frames; this rank's share under DDP) and
    read every one of this rank's maps once (``precheck``), so that nothing is scored on a partial or bad set."""
    known = frame_names(dataset)
    frames = known[: limit] if limit is not None else known
    folder = Path(folder).expanduser()
    maps = MapFolder.open(folder, frames, known, scale=scale, offset=offset, higher_is_anomalous=higher_is_anomalous)
    if precheck:
        for fid in frames[dist.rank()::dist.world_size()]:
            maps.read(fid)
    return MapSource(maps, name or folder.resolve().name or "maps")


def evaluate_maps(dataset: Any, maps: str | os.PathLike, out: str | os.PathLike | None = None, *,
                  scale: float | None = None, offset: float = 0.0, higher_is_anomalous: bool = True,
                  name: str | None = None, limit: int | None = None, echo: bool = False, **kw: Any) -> dict:
    """Score the anomaly maps in folder ``maps`` on ``dataset`` with the metrics of ``denseood eval``.

    dataset: a denseood dataset, or (name, root[, split]) opened with ``open_dataset`` (then min_segment_size /
    min_instance_size / streethazards_unlabeled in ``kw`` go to the reader). maps: one file per frame id (see
    :mod:`denseood.data.maps`; scale/offset for PNG/TIFF, higher_is_anomalous=False flips the sign); the score is
    named ``name`` (default: the folder name). out: results folder (None: a temporary one, removed afterwards).
    Other keyword arguments go to :func:`~denseood.commands.eval.runner.evaluate` (protocol, components, batch_size,
    workers, save_maps, save_maps_format, method, overwrite, progress, command). Returns the results dict.
    """
    from denseood.data import open_dataset

    from .report import results_markdown
    from .runner import evaluate

    reader_kw = {k: kw.pop(k) for k in ("min_segment_size", "min_instance_size") if kw.get(k) is not None}
    unlabeled = kw.pop("streethazards_unlabeled", None)
    for k in ("min_segment_size", "min_instance_size"):
        kw.pop(k, None)
    if isinstance(dataset, (tuple, list)):
        if not 2 <= len(dataset) <= 3:
            raise ConfigError(f"dataset must be a dataset object or (name, root[, split]), got {dataset!r}")
        if unlabeled is not None:
            if dataset[0] != "streethazards":
                raise ConfigError(f"--streethazards-unlabeled applies to --dataset streethazards, not {dataset[0]!r}")
            reader_kw["unlabeled"] = unlabeled
        dataset = open_dataset(*dataset, **reader_kw)
    elif reader_kw or unlabeled is not None:
        raise ConfigError("reader options (min_segment_size, min_instance_size, streethazards_unlabeled) need "
                          "dataset=(name, root[, split]); set them on the dataset object instead")
    tmp = None
    if out is None:
        tmp = Path(tempfile.mkdtemp(prefix="denseood-eval-maps-"))
        out, kw["overwrite"] = tmp, True
    else:
        from denseood.outdir import check_out_dir

        check_out_dir(out, kw.get("overwrite", False))
    check_method(kw.get("method"))
    started = dist.init_from_env()
    try:
        source = open_map_source(dataset, maps, limit=limit, scale=scale, offset=offset,
                                 higher_is_anomalous=higher_is_anomalous, name=name)
        res = evaluate(dataset, None, [source.score], out, source=source, limit=limit, **kw)
        if echo and dist.is_main():
            print(results_markdown(res))
            if tmp is None:
                print(f"results written to {Path(out) / 'results.json'}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if started:
            dist.cleanup()
    return res
