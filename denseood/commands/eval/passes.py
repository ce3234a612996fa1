"""Pass 2 of ``denseood eval``: the frame cache and every metric that needs a pixel threshold.

Pass 1 (the runner) feeds one PixelMetrics per score and writes each frame's score maps into a
:class:`MapCache` (float16 ``.npy`` under ``--out``, never in memory or the system /tmp). :func:`threshold_pass`
then replays the cache once per score at that score's ``best_f1_threshold`` (the pixel row the runner already
computed, on the run's ``--protocol``):

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
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from denseood.io import save_npy

from .report import plain_json

PIXEL_KEYS = ("ap", "fpr95", "auroc", "best_f1")  # the baseline row's pixel_<key> numbers, from the score row


def to_f16(a: np.ndarray) -> np.ndarray:
    """float16 copy of a score map, clipped to the float16 range (scores beyond +-65504 would become inf)."""
    return np.clip(a, -65504.0, 65504.0).astype(np.float16)


class MapCache:
    """This rank's score maps (float16) and ood masks (uint8 0/1/255), one ``.npy`` per frame and score, in a
    temporary folder under ``out`` (``.denseood-eval-maps-r<rank>-<pid>-*``, removed by :meth:`close`)."""

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
