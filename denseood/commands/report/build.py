"""The report's data, read from saved eval runs: results.json and the per-frame files (:mod:`.layout`).

:func:`load_run` reads one run folder into a :class:`Run`; the per-frame numbers at a threshold come from the
frames' sparse histograms (float16-rounded maps, ``score >= threshold`` is positive, void left out), so any
threshold works after the run: the 95 %-TPR threshold of the score row (``threshold_at_tpr95``, chosen on the
evaluated split's labels) and a deployment threshold (``at_threshold.threshold``) when results.json has one.
:func:`write_report` renders runs to one HTML file (:mod:`.html`). See docs/architecture.md.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from denseood.errors import ConfigError

from .layout import FRAMES_DIR, FRAMES_JSON, NO_INSTANCE

SIZE_BINS = ((0, 1_000, "< 1k px"), (1_000, 10_000, "1k–10k px"), (10_000, math.inf, "> 10k px"))
MAX_VIEWS = 100      # frame views (thumbnails) embedded per page (shared by its runs); worst frames always included
WORST_K = 3          # worst frames per list


@dataclass
class Run:
    """One eval run: ``dir``, ``label`` (unique on the page), ``results`` (results.json), ``frames`` (frames.json
    records plus, per frame, ``ap`` / ``fp`` / ``missed`` / ``tp`` at ``primary``'s operating threshold),
    ``primary`` (the score of the per-frame numbers: the S2M score, else the best-AP score; None without labels),
    ``threshold`` (its 95 %-TPR threshold), ``pooled`` {score: (values, n_pos, n_neg)} over all frames."""

    dir: Path
    label: str
    results: dict[str, Any]
    frames: list[dict[str, Any]] = field(default_factory=list)
    primary: str | None = None
    threshold: float | None = None
    pooled: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def npz(self, frame: dict[str, Any]) -> Any:
        """The frame's arrays (numpy NpzFile)."""
        return np.load(self.dir / FRAMES_DIR / frame["file"])


def ci_of(row: dict[str, Any], key: str) -> list[float] | None:
    """The 95 % interval of ``row[key]`` from results.json's ``row["ci95"][key]`` (the layout of docs/metrics.md),
    as [lo, hi]; None when absent."""
    ci = (row.get("ci95") or {}).get(key)
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return [float(ci[0]), float(ci[1])]
    return None


def histogram(npz: Any, score: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values float32, groups uint16, counts int64) of a frame's sparse histogram of ``score``."""
    v = npz[f"hv_{score}"].view(np.float16).astype(np.float32)
    return v, npz[f"hg_{score}"], npz[f"hc_{score}"].astype(np.int64)


def average_precision(values: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float | None:
    """Step AP of counts ``pos``/``neg`` at ``values`` (ties grouped, higher = more anomalous); None without
    anomaly pixels."""
    uv, inv = np.unique(values, return_inverse=True)
    p = np.bincount(inv, pos, uv.size)[::-1]
    n = np.bincount(inv, neg, uv.size)[::-1]
    if p.sum() <= 0:
        return None
    tp, fp = np.cumsum(p), np.cumsum(n)
    return float(np.sum(p / p.sum() * tp / (tp + fp)))


def frame_numbers(npz: Any, score: str, threshold: float) -> dict[str, Any]:
    """Per-frame ``ap``, ``fp`` (inlier pixels >= threshold), ``missed`` (anomaly pixels < threshold), ``tp`` and
    each ground-truth instance's detected pixels ``inst_tp`` (list, instance k at k-1)."""
    v, g, c = histogram(npz, score)
    pos = np.where(g > 0, c, 0)
    neg = np.where(g == 0, c, 0)
    hit = v >= threshold
    n_inst = int(g[(g > 0) & (g != NO_INSTANCE)].max(initial=0))
    inst_tp = np.bincount(g[hit & (g > 0) & (g != NO_INSTANCE)], c[hit & (g > 0) & (g != NO_INSTANCE)],
                          n_inst + 1)[1:]
    return {"ap": average_precision(v, pos, neg), "fp": int(neg[hit].sum()), "missed": int(pos[~hit].sum()),
            "tp": int(pos[hit].sum()), "inst_tp": [int(x) for x in inst_tp]}


def primary_score(results: dict[str, Any]) -> str | None:
    """The score of the per-frame numbers: results' ``s2m_score``, else the score with the best AP."""
    scores = results.get("scores") or {}
    if not scores:
        return None
    s = results.get("s2m_score")
    return s if s in scores else max(scores, key=lambda k: scores[k].get("ap", -1.0))


def load_run(run_dir: str | Path, label: str | None = None) -> Run:
    """Read ``run_dir`` (a ``denseood eval --out`` folder). ConfigError when it has no results.json."""
    d = Path(run_dir)
    path = d / "results.json"
    if not path.is_file():
        raise ConfigError(f"{d} has no results.json; pass the --out folder of a `denseood eval` run")
    results = json.loads(path.read_text(encoding="utf-8"))
    run = Run(dir=d, label=label or d.name, results=results, primary=primary_score(results))
    fj = d / FRAMES_DIR / FRAMES_JSON
    if run.primary is None or not fj.is_file():
        return run  # no labels, or a run written before 0.2 (no per-frame files): card and table only
    meta = json.loads(fj.read_text(encoding="utf-8"))
    run.threshold = float(results["scores"][run.primary]["threshold_at_tpr95"])
    # pooled counts per float16 bit pattern (2 x 65536 per score, whatever the number of frames)
    pooled = {s: np.zeros((2, 1 << 16)) for s in meta["scores"]}
    for fr in meta["frames"]:
        with run.npz(fr) as z:
            fr.update(frame_numbers(z, run.primary, run.threshold))
            for s in meta["scores"]:
                bits, g, c = z[f"hv_{s}"], z[f"hg_{s}"], z[f"hc_{s}"].astype(np.float64)
                pooled[s][0] += np.bincount(bits, np.where(g > 0, c, 0), 1 << 16)
                pooled[s][1] += np.bincount(bits, np.where(g == 0, c, 0), 1 << 16)
        run.frames.append(fr)
    values = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    for s, counts in pooled.items():
        keep = np.flatnonzero((counts.sum(0) > 0) & ~np.isnan(values))
        keep = keep[np.argsort(values[keep], kind="stable")]
        run.pooled[s] = (values[keep], counts[0, keep], counts[1, keep])
    return run


def curve_points(values: np.ndarray, pos: np.ndarray, neg: np.ndarray, n: int = 400) -> dict[str, np.ndarray]:
    """PR / ROC points (precision, recall, fpr) of pooled counts, thresholds high to low, thinned to about ``n``."""
    p, q = pos[::-1], neg[::-1]
    tp, fp = np.r_[0.0, np.cumsum(p)], np.r_[0.0, np.cumsum(q)]
    rec = tp / max(tp[-1], 1)
    fpr = fp / max(fp[-1], 1)
    prec = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
    idx = np.unique(np.r_[np.linspace(0, tp.size - 1, n).astype(int), np.searchsorted(rec, 0.95)]).clip(0, tp.size - 1)
    return {"precision": prec[idx], "recall": rec[idx], "fpr": fpr[idx]}


def quantile(values: np.ndarray, counts: np.ndarray, q: float) -> float:
    """The ``q`` quantile of a histogram (values sorted ascending)."""
    cum = np.cumsum(counts)
    return float(values[min(int(np.searchsorted(cum, q * cum[-1])), values.size - 1)]) if cum.size else 0.0


def worst(frames: Sequence[dict[str, Any]], key: str, k: int = WORST_K) -> list[dict[str, Any]]:
    """The ``k`` frames with the largest ``key`` (> 0), largest first."""
    return [f for f in sorted(frames, key=lambda f: -f[key]) if f[key] > 0][:k]


def recall_by_size(frames: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per SIZE_BINS bin: n instances, pixel recall at the operating threshold, and (with S2M) the fraction of
    instances an S2M object covers with IoU > 0.5 (None without S2M)."""
    rows = []
    for lo, hi, name in SIZE_BINS:
        inst = [(i, fr["inst_tp"][k]) for fr in frames for k, i in enumerate(fr["instances"]) if lo <= i["area"] < hi]
        area = sum(i["area"] for i, _ in inst)
        s2m = [i["s2m_iou"] for i, _ in inst if i["s2m_iou"] is not None]
        rows.append({"bin": name, "n": len(inst), "pixel_recall": sum(t for _, t in inst) / area if area else None,
                     "s2m_found": sum(v > 0.5 for v in s2m) / len(s2m) if s2m else None})
    return rows
