"""Pass-1 extras of ``denseood eval``'s score rows: bootstrap intervals (``ci95``) and ``at_threshold``.

:class:`PixelExtras` is fed the same batches as the pixel metrics (one :class:`~denseood.eval.bootstrap.
FrameHistograms` per score for ``--bootstrap B``, one :class:`~denseood.eval.threshold.ThresholdCounts` for the
score of ``--threshold-from FILE``) and :meth:`PixelExtras.finish` adds, per score row, ``ci95: {ap, fpr95,
auroc: [lo, hi]}`` and ``at_threshold: {fpr, tpr, precision, f1, threshold, source, tp, fp, fn, tn}``, and returns
the top-level ``bootstrap`` / ``threshold_from`` blocks. Collective under torch.distributed (the frames of every
rank are gathered, ordered by frame id). Layout: docs/metrics.md.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from denseood.errors import ConfigError
from denseood.eval.bootstrap import DEFAULT_SEED, METRICS, FrameHistograms
from denseood.eval.threshold import ThresholdCounts, load_threshold

from .report import plain_json

BOOTSTRAP_METHOD = "percentile interval; frames resampled with replacement; metrics of the pooled histograms"


class PixelExtras:
    """bootstrap: number of resamples B (0: no intervals); threshold_from: a threshold.json (or its folder) or
    None. The file's score must be one of ``scores``. protocol: the run's pixel protocol (caos averages per-frame
    metrics, so its intervals are those of the per-frame average)."""

    def __init__(self, scores: Sequence[str], protocol: str, bootstrap: int = 1000,
                 threshold_from: str | None = None, seed: int = DEFAULT_SEED) -> None:
        if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
            raise ConfigError(f"--bootstrap {bootstrap!r} must be a non-negative integer (0 turns it off; default 1000)")
        self.n_boot, self.seed, self.protocol = bootstrap, seed, protocol
        self.hists = {s: FrameHistograms() for s in scores} if bootstrap else {}
        self.threshold = load_threshold(threshold_from) if threshold_from is not None else None
        self.counts = None
        if self.threshold is not None:
            if self.threshold["score"] not in scores:
                raise ConfigError(f"--threshold-from {self.threshold['file']} is a threshold of score "
                                  f"{self.threshold['score']!r}, which this run does not evaluate "
                                  f"({', '.join(scores)}); add it to --score")
            self.counts = ThresholdCounts(self.threshold["threshold"])

    def update(self, maps: dict[str, torch.Tensor], masks: torch.Tensor, names: Sequence[str]) -> None:
        """maps {score: (B,H,W)}, masks (B,H,W) uint8 0/1/255, names: the B frame ids."""
        for s, fh in self.hists.items():
            fh.update(maps[s], masks, names)
        if self.counts is not None:
            self.counts.update(maps[self.threshold["score"]], masks)

    def finish(self, per_score: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Add ``ci95`` / ``at_threshold`` to the rows of ``per_score``; return the top-level blocks."""
        top: dict[str, Any] = {}
        if self.hists:
            rows: dict[str, dict[str, Any]] = {}
            n_frames = bins = 0
            for s, fh in self.hists.items():
                r = fh.gathered().compute(self.n_boot, self.seed, per_frame_mean=self.protocol == "caos")
                per_score[s]["ci95"] = plain_json(r["ci95"])
                diff = {k: None if r["point"][k] is None or per_score[s].get(k) is None
                        else r["point"][k] - per_score[s][k] for k in METRICS}
                rows[s] = {"bin_width": r["bin_width"], "n_undefined": r["n_undefined"], "point_minus_reported": diff}
                n_frames, bins = r["n_frames"], fh.bins
                fh.frames = {}  # free the per-frame counts before pass 2
            top["bootstrap"] = plain_json({
                "B": self.n_boot, "seed": self.seed, "level": 0.95, "unit": "frame", "n_frames": n_frames,
                "method": BOOTSTRAP_METHOD + (" (per-frame average: caos)" if self.protocol == "caos" else ""),
                "bins": bins, "scores": rows})
        if self.counts is not None:
            t = self.threshold
            source = {"file": t["file"], "score": t["score"], "target_fpr": t["target_fpr"], **(t["source"] if
                      isinstance(t["source"], dict) else {"chosen_on": str(t["source"])})}
            per_score[t["score"]]["at_threshold"] = plain_json({**self.counts.compute(), "source": source})
            top["threshold_from"] = plain_json(source)
        return top
