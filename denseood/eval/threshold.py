"""A deployment threshold: the (1 - target FPR) quantile of inlier pixel scores, and the counts at a threshold.

Rule everywhere: a pixel is predicted anomalous when ``score > threshold`` (as the component metrics).
:class:`InlierQuantile` keeps the inlier scores exactly up to ``exact_limit`` values and then switches to a fine
aligned histogram (:class:`~.histogram.StreamingHistogram`, 2**20 bins): the threshold then lies at most one bin
width above the exact quantile, stated as ``threshold_error``. :class:`ThresholdCounts` counts TP/FP/FN/TN at a
given threshold (collective ``compute`` under torch.distributed). See docs/metrics.md (deployment threshold).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from .. import dist
from ..errors import ConfigError, DenseOODError
from ._inputs import check_finite, prepare_inputs
from .histogram import StreamingHistogram

EXACT_LIMIT = 20_000_000  # inlier scores kept exactly (80 MB of float32)
HIST_BINS = 2 ** 20


def check_target_fpr(target: float) -> float:
    """target FPR as a float in (0, 1); ConfigError naming the value otherwise."""
    try:
        t = float(target)
    except (TypeError, ValueError):
        raise ConfigError(f"--target-fpr {target!r} must be a number in (0, 1), e.g. 0.01") from None
    if not 0.0 < t < 1.0:
        raise ConfigError(f"--target-fpr {target!r} must lie strictly between 0 and 1, e.g. 0.01")
    return t


class InlierQuantile:
    """Inlier pixel scores -> the threshold whose FPR on them is at most ``target`` (and as close as ties allow).

    ``update(scores, ood_mask)``: as ``PixelMetrics.update``; only inlier pixels (label 0) are counted (void 255
    and anomaly 1 are not; refusing a split with anomalies is the caller's job). ``compute(target)`` ->
    {threshold, calibration_fpr (<= target), n_pixels, method ("exact" | "histogram"), threshold_error (0 for
    exact; else the bin width: the exact quantile lies in [threshold - error, threshold])}.
    """

    def __init__(self, exact_limit: int = EXACT_LIMIT, bins: int = HIST_BINS) -> None:
        self.exact_limit = int(exact_limit)
        self.bins = int(bins)
        self._values: list[torch.Tensor] = []
        self._n = 0
        self._hist: StreamingHistogram | None = None

    def update(self, scores: Any, ood_mask: Any) -> None:
        s, m = prepare_inputs(scores, ood_mask)
        m = torch.where(m == 0, 0, 255).to(torch.uint8)  # inliers only
        if self._hist is not None:
            self._hist.add(s, m)  # checks finiteness
            self._n += int((m == 0).sum())
            return
        check_finite(s, m)
        v = s[m == 0].detach().to("cpu", torch.float64 if s.dtype == torch.float64 else torch.float32)
        self._values.append(v)
        self._n += v.numel()
        if self._n > self.exact_limit:  # switch to the fine histogram, exactly re-counting what was kept
            self._hist = StreamingHistogram(self.bins, None)
            allv = torch.cat(self._values)
            self._hist.add(allv[None, None], torch.zeros(1, 1, allv.numel(), dtype=torch.uint8))
            self._values = []

    def compute(self, target: float) -> dict[str, Any]:
        target = check_target_fpr(target)
        if self._n == 0:
            raise DenseOODError("no inlier pixels were seen: every pixel was void (or no frame was read)")
        k = math.floor(target * self._n)  # false positives allowed
        if self._hist is None:
            v = torch.sort(torch.cat(self._values)).values
            t = v[self._n - 1 - k]
            n_above = int((v > t).sum())
            return {"threshold": float(t), "calibration_fpr": n_above / self._n, "n_pixels": self._n,
                    "method": "exact", "threshold_error": 0.0}
        h = self._hist
        row = h.hist[0].cpu()  # slots ascending; regular slot j covers [(a+j-1) w, (a+j) w)
        above = row.flip(0).cumsum(0).flip(0) - row  # pixels in slots > j
        j = int(torch.nonzero(above <= k)[0])
        width = math.ldexp(1.0, h.e)
        t = (h.a + j) * width  # the upper edge of slot j: every pixel above it lies in a slot > j
        return {"threshold": float(t), "calibration_fpr": int(above[j]) / self._n, "n_pixels": self._n,
                "method": "histogram", "threshold_error": width}


class ThresholdCounts:
    """Pixel counts at one threshold (``score > threshold`` = predicted anomaly) over a dataset.

    ``update(scores, ood_mask)`` as ``PixelMetrics.update`` (void 255 excluded). ``compute()`` -> {fpr, tpr,
    precision, f1, threshold, tp, fp, fn, tn}; fractions in [0, 1], None where undefined (no anomaly pixels: tpr,
    f1; nothing predicted: precision). Collective under torch.distributed.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)
        self._c = torch.zeros(4, dtype=torch.int64)  # tp, fp, fn, tn

    def update(self, scores: Any, ood_mask: Any) -> None:
        s, m = prepare_inputs(scores, ood_mask)
        pred = s > self.threshold
        pos, neg = m == 1, m == 0
        c = torch.stack([(pred & pos).sum(), (pred & neg).sum(), (~pred & pos).sum(), (~pred & neg).sum()])
        self._c += c.cpu()

    def compute(self) -> dict[str, Any]:
        tp, fp, fn, tn = (int(v) for v in dist.all_reduce(self._c).tolist())
        if tn + fp == 0:
            raise DenseOODError("ThresholdCounts: no inlier pixels were seen; the FPR at the threshold is undefined")
        tpr = tp / (tp + fn) if tp + fn else None
        prec = tp / (tp + fp) if tp + fp else None
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fn else None
        return {"fpr": fp / (fp + tn), "tpr": tpr, "precision": prec, "f1": f1, "threshold": self.threshold,
                "tp": tp, "fp": fp, "fn": fn, "tn": tn}


# ----------------------------------------------------------------------------------------------- threshold.json
THRESHOLD_FILE = "threshold.json"
THRESHOLD_KEYS = ("score", "threshold", "target_fpr", "n_frames", "n_pixels", "source")


def load_threshold(path: str | os.PathLike) -> dict[str, Any]:
    """The checked content of a ``denseood calibrate`` threshold file (``path`` = the file or its folder), with
    ``file`` (the path read). ConfigError naming the file and what is wrong (missing, not JSON, keys, types)."""
    p = Path(path)
    if p.is_dir():
        p = p / THRESHOLD_FILE
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--threshold-from {p}: no such file; write one with denseood calibrate") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"--threshold-from {p}: not a readable JSON file ({e})") from None
    missing = [k for k in THRESHOLD_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise ConfigError(f"--threshold-from {p}: missing key(s) {', '.join(missing)}; expected the threshold.json "
                          "written by denseood calibrate")
    t = data["threshold"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise ConfigError(f"--threshold-from {p}: threshold {t!r} is not a finite number")
    if not isinstance(data["score"], str) or not data["score"]:
        raise ConfigError(f"--threshold-from {p}: score {data['score']!r} is not a score name")
    return {**data, "threshold": float(t), "file": str(p)}
