"""The per-frame files ``denseood eval`` writes: score maps and the SMIYC submission.

:func:`save_score_map` (``--save-maps``: ``score_maps/<score>/<fid>.<ext>`` in ``--save-maps-format``, read back
by ``--maps``) and :func:`write_submission` (unlabelled splits: the official SegmentMeIfYouCan layout
``submission/anomaly_p/<method>/<dataset>/<fid>.hdf5``, dataset ``value``, float16, gzip 9, as
``road_anomaly_benchmark.evaluation.Evaluation`` writes and reads it; ``<dataset>`` is the benchmark's
``name_for_persistence`` of the split, see :data:`SMIYC_PERSISTENCE`). The checks of their options
(:func:`check_save_format`, :func:`check_method`) run once, in :class:`~.options.EvalOptions`.
Imported by the runner and the options; imports neither (no circle). See docs/architecture.md.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from denseood.data.maps import FORMAT_SIDECAR, H5_KEY, SAVE_FORMATS, to_float16, write_map
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
