"""``denseood eval --maps``: score precomputed anomaly maps.

:class:`MapSource` stands in for the inference engine of :func:`~denseood.commands.eval.runner.evaluate`: it
yields (samples, {name: (b,H,W) maps}) batches read from a checked :class:`~denseood.data.maps.MapFolder`, so
map folders go through the same metric, component, submission and report code as a checkpoint. The maps are one
score, named after the folder (``--maps out/score_maps/jsd`` gives the row ``jsd``). The files eval writes per
frame are in :mod:`.writers`. This module sits above the runner (it calls ``evaluate``); the runner does not
import it. See docs/architecture.md.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from denseood import dist
from denseood.data.maps import MapFolder
from denseood.errors import ConfigError

from .options import EvalOptions
from .report import results_markdown
from .runner import evaluate

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


def evaluate_maps(dataset: Any = None, maps: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                  *, options: EvalOptions | None = None, scale: float | None = None, offset: float = 0.0,
                  higher_is_anomalous: bool = True, name: str | None = None, **keywords: Any) -> dict:
    """Score the anomaly maps in folder ``maps`` on ``dataset`` with the metrics of ``denseood eval``.

    dataset: a denseood dataset, or (name, root[, split]) opened with ``open_dataset`` (then min_segment_size /
    min_instance_size / streethazards_unlabeled go to the reader), or None with ``options`` naming it. maps: one
    file per frame id (see :mod:`denseood.data.maps`; scale/offset for PNG/TIFF, higher_is_anomalous=False flips
    the sign); the score is named ``name`` (default: the folder name). out: results folder (None: a temporary one,
    removed afterwards). Other keywords are :class:`~.options.EvalOptions` fields (protocol, components,
    batch_size, workers, limit, save_maps, save_maps_format, method, overwrite, progress, echo, command); or pass
    ``options`` (an EvalOptions with ``maps`` set) instead of all of them. Returns the results dict.
    """
    from denseood.data import open_dataset

    named = _dataset_names(dataset)
    tmp = None
    if options is None:
        if out is None:
            tmp = Path(tempfile.mkdtemp(prefix="denseood-eval-maps-"))
            out, keywords["overwrite"] = tmp, True
        try:
            options = EvalOptions(out=out, maps=maps, maps_scale=scale, maps_offset=offset, maps_name=name,
                                  maps_higher_is_anomalous=higher_is_anomalous, **named, **keywords)
        except BaseException:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
    elif keywords or maps is not None or out is not None:
        raise ConfigError("pass either options=EvalOptions(...) or maps/out/keyword options, not both")
    opts = options
    try:
        if dataset is None or named:
            dataset = open_dataset(opts.dataset, opts.root, opts.split, **opts.reader_options())
        elif opts.reader_options():
            raise ConfigError("reader options (min_segment_size, min_instance_size, streethazards_unlabeled) need "
                              "dataset=(name, root[, split]); set them on the dataset object instead")
        started = dist.init_from_env()
        try:
            source = open_map_source(dataset, opts.maps, limit=opts.limit, scale=opts.maps_scale,
                                     offset=opts.maps_offset, higher_is_anomalous=opts.maps_higher_is_anomalous,
                                     name=opts.scores[0])
            res = evaluate(dataset, None, opts, source=source)
            if opts.echo and dist.is_main():
                print(results_markdown(res))
                if tmp is None:
                    print(f"results written to {Path(opts.out) / 'results.json'}")
        finally:
            if started:
                dist.cleanup()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return res


def _dataset_names(dataset: Any) -> dict[str, Any]:
    """EvalOptions' dataset / root / split of a (name, root[, split]) tuple; {} for a dataset object or None."""
    if not isinstance(dataset, (tuple, list)):
        return {}
    if not 2 <= len(dataset) <= 3:
        raise ConfigError(f"dataset must be a dataset object or (name, root[, split]), got {dataset!r}")
    return dict(zip(("dataset", "root", "split"), dataset))
