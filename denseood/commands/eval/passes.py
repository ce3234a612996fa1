"""The two passes of ``denseood eval`` over one :class:`EvalRun` (the state the runner sets up).

Pass 1 (:func:`inference_pass`) runs the engine once over the frames, feeds one PixelMetrics per score, writes
the per-frame files (:mod:`.writers`) and each frame's score maps into a :class:`MapCache` (float16 ``.npy``
under ``--out``, never in memory or the system /tmp). Pass 2 (:func:`metrics_pass`) computes the pixel rows and
:func:`threshold_pass` replays the cache once per score at that score's ``best_f1_threshold`` (on the run's
``--protocol``):

- the SMIYC component metrics of each score row (``ComponentMetrics``: ``map > t``, void removed, 8-connected,
  components under ``min_segment_size`` dropped);
- for ``--s2m``, the ``threshold@bestF1`` object row of the S2M score: the same components, each one object,
  fed to one ``ObjectMetrics`` (:func:`denseood.eval.components.threshold_components`). Its pixel numbers are
  the score row's; the threshold is chosen on the evaluated frames' own ground truth (an oracle).

There is one pixel metric per score and one cache per rank: the S2M rows (``.s2m.S2MEval``) keep no maps.
DDP: every rank replays its own frames; each ``compute`` is collective and every rank runs the same sequence
(scores in order, the baseline with its score). See docs/architecture.md and docs/metrics.md.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from denseood import dist
from denseood.errors import DatasetError
from denseood.io import save_npy, write_png

from .options import EvalOptions
from .report import plain_json
from .writers import save_score_map, write_submission

PIXEL_KEYS = ("ap", "fpr95", "auroc", "best_f1")  # the baseline row's pixel_<key> numbers, from the score row


def to_f16(a: np.ndarray) -> np.ndarray:
    """float16 copy of a score map, clipped to the float16 range (scores beyond +-65504 would become inf)."""
    return np.clip(a, -65504.0, 65504.0).astype(np.float16)


class MapCache:
    """This rank's score maps (float16) and ood masks (uint8 0/1/255), one ``.npy`` per frame and score (written by
    :func:`denseood.io.save_npy`, atomically), in a temporary folder under ``out``
    (``.denseood-eval-maps-r<rank>-<pid>-*``, removed by :meth:`close`)."""

    def __init__(self, out: Path, rank: int, scores: Sequence[str]) -> None:
        self.scores = list(scores)
        self.dir = Path(tempfile.mkdtemp(prefix=f".denseood-eval-maps-r{rank}-{os.getpid()}-", dir=out))
        self.n = 0

    def add(self, maps: dict[str, np.ndarray], mask: np.ndarray) -> None:
        """One frame: maps {score: (H,W) float}, mask (H,W) uint8. Disk full: one OutputError naming the file."""
        for s in self.scores:
            save_npy(self.dir / f"{s}_{self.n}.npy", to_f16(maps[s]))
        save_npy(self.dir / f"mask_{self.n}.npy", mask)
        self.n += 1

    def load(self, score: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        """((H,W) float32 map of ``score``, (H,W) uint8 mask) of frame ``i``."""
        return (np.load(self.dir / f"{score}_{i}.npy").astype(np.float32),
                np.load(self.dir / f"mask_{i}.npy"))

    def close(self) -> None:
        """Delete the folder."""
        shutil.rmtree(self.dir, ignore_errors=True)


def threshold_pass(cache: MapCache, per_score: dict[str, dict[str, Any]], component_scores: Sequence[str], *,
                   min_segment_size: int, min_instance_size: int, baseline_score: str | None = None,
                   progress: bool = False) -> dict[str, Any] | None:
    """Add sIoU, PPV, mean_F1, F1_per_threshold, n_gt, n_pred to ``per_score[s]`` for each of
    ``component_scores``, at ``per_score[s]["best_f1_threshold"]``; with ``baseline_score``, return the
    ``threshold@bestF1`` row (ObjectMetrics keys + pixel_ap/fpr95/auroc/best_f1 + threshold), else None.
    Collective under torch.distributed."""
    from ...progress import progress_bar

    from denseood.eval import ComponentMetrics, ObjectMetrics
    from denseood.eval.components import threshold_components

    order = list(component_scores)
    if baseline_score is not None and baseline_score not in order:
        order.append(baseline_score)
    baseline = None
    for s in order:
        thr = float(per_score[s]["best_f1_threshold"])
        cm = ComponentMetrics(threshold=thr, min_segment_size=min_segment_size, min_instance_size=min_instance_size) \
            if s in component_scores else None
        om = ObjectMetrics(min_instance_size=min_instance_size) if s == baseline_score else None
        for i in progress_bar(range(cache.n), desc=f"components {s}", unit="img", leave=False, disable=not progress):
            amap, mask = cache.load(s, i)
            if cm is not None:
                cm.update(amap[None], mask[None])
            if om is not None:
                om.update(threshold_components(amap, mask, thr, min_segment_size), mask)
        if cm is not None:
            c = cm.compute()  # collective
            per_score[s].update({k: plain_json(c[k]) for k in c})
        if om is not None:
            baseline = dict(om.compute())  # collective
            baseline.update({f"pixel_{k}": per_score[s][k] for k in PIXEL_KEYS})
            baseline["threshold"] = thr
    return baseline


# ----------------------------------------------------------------------------------------------- the two passes
@dataclass
class EvalRun:
    """One evaluation between its passes: the options, the frames (``data``: ``dataset`` or its first --limit
    frames), the engine (``Inference`` or a ``MapSource``), where files go (``stage``), the per-dataset settings
    and the metric states; pass 2 fills ``per_score`` / ``curves`` / ``s2m_results``."""

    opts: EvalOptions
    dataset: Any
    data: Dataset
    engine: Any
    stage: Path
    protocol: str
    has_labels: bool
    component_sizes: tuple[int, int]
    sampler: Any = None
    pixel: dict[str, Any] | None = None
    s2m: Any = None
    s2m_eval: Any = None
    cache: MapCache | None = None
    n_local: int = 0
    per_score: dict[str, dict[str, Any]] = field(default_factory=dict)
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    s2m_results: dict[str, Any] | None = None
    from_maps: bool = False  # the engine is a MapSource (results.json gets maps_input)
    extras: Any = None  # issue 23: .intervals.PixelExtras (labelled splits)
    records: Any = None  # .frames.FrameRecords, report.html's per-frame data
    extra_top: dict[str, Any] = field(default_factory=dict)  # issue 23: results.json bootstrap / threshold_from


def _safe_rel(name: str) -> Path:
    """Frame id -> relative output path (subfolders allowed; absolute paths and '..' refused)."""
    p = Path(str(name).replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise DatasetError(f"frame id {name!r} cannot be used as an output file name (absolute or contains '..')")
    return p


def _with_suffix(rel: Path, suffix: str) -> Path:
    return rel.parent / (rel.name + suffix)  # keep dots of the frame id


def inference_pass(run: EvalRun) -> None:
    """Pass 1: every frame of this rank once through the engine -> pixel metrics, cache, per-frame files."""
    opts, scores = run.opts, run.opts.scores
    for samples, maps in run.engine.run(run.data, batch_size=opts.batch_size, workers=opts.workers,
                                        sampler=run.sampler, progress=opts.progress and dist.rank() == 0):
        masks_np = None
        if run.has_labels:
            missing = [s.name for s in samples if s.ood_mask is None]
            if missing:
                raise DatasetError(f"frames {missing[:5]} of a labelled split have no anomaly label")
            masks_np = np.stack([s.ood_mask for s in samples])
            masks = torch.from_numpy(masks_np).to(run.engine.device)
            for s in scores:
                run.pixel[s].update(maps[s], masks)
            run.extras.update(maps, masks, [smp.name for smp in samples])  # issue 23
        maps_np = {s: maps[s].cpu().numpy() for s in scores}
        for j, smp in enumerate(samples):
            _frame_outputs(run, smp, {s: maps_np[s][j] for s in scores},
                           masks_np[j] if masks_np is not None else None)
        run.n_local += len(samples)


def _frame_outputs(run: EvalRun, smp: Any, maps: dict[str, np.ndarray], mask: np.ndarray | None) -> None:
    """One frame's share of pass 1: cache entry, submission files, --save-maps files, the S2M row."""
    opts, scores, stage = run.opts, run.opts.scores, run.stage
    rel = _safe_rel(smp.name)
    if run.cache is not None:
        run.cache.add({s: maps[s] for s in run.cache.scores}, mask)
    if not run.has_labels:
        for s in scores:
            write_submission(stage, run.dataset, s, scores, opts.method, rel, maps[s])
    if opts.save_maps:
        from denseood.viz import blend, heatmap

        for s in scores:
            write_png(stage / "maps" / s / _with_suffix(rel, ".png"), blend(smp.image, heatmap(maps[s]), alpha=0.6))
            save_score_map(stage, s, rel, maps[s], opts.save_maps_format)
    objects = None if run.s2m_eval is None else run.s2m_eval.update(
        smp.image, maps[run.s2m.score].astype(np.float32), smp.ood_mask, smp.instances,
        smp.meta.get("instance_source"))
    run.records.update(smp, maps, objects)


def metrics_pass(run: EvalRun) -> None:
    """Pass 2 (labelled splits): the pixel rows, then the thresholded metrics from the cache (collective)."""
    scores = run.opts.scores
    run.per_score = {s: {} for s in scores}
    if not run.has_labels:
        return
    for s in scores:
        m = run.pixel[s].compute()  # collective under DDP
        run.per_score[s].update({k: plain_json(m[k]) for k in m})
        run.curves[s] = {k: np.asarray(v) for k, v in run.pixel[s].curves().items()}
        run.pixel[s] = None  # free the metric state before pass 2
    run.extra_top = run.extras.finish(run.per_score)  # issue 23: ci95 / at_threshold rows, bootstrap block
    baseline = None
    if run.cache is not None:
        min_seg, min_inst = run.component_sizes
        baseline = threshold_pass(run.cache, run.per_score, scores if run.opts.components else [],
                                  min_segment_size=min_seg, min_instance_size=min_inst,
                                  baseline_score=run.s2m.score if run.s2m is not None else None,
                                  progress=run.opts.progress and dist.rank() == 0)
    if run.s2m_eval is not None:
        run.s2m_results = plain_json({"s2m": run.s2m_eval.compute(), "threshold@bestF1": baseline})
