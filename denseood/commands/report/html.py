"""Render :class:`~.build.Run` objects to one self-contained HTML page (jinja2 template ``templates/report.html.j2``).

Everything is inline: styles, the small sort script, SVG plots and the thumbnails (base64 JPEG / PNG data URIs),
so the page opens from ``file://`` with no network. See docs/architecture.md.
"""
from __future__ import annotations

import base64
from typing import Any, Sequence

import cv2
import numpy as np

from denseood.eval.protocols import PROTOCOLS

from .build import MAX_VIEWS, Run, ci_of, curve_points, quantile, recall_by_size, worst
from .svg import colour_bar, curve_plot

# (key, header, higher is better) of the score table; numbers are fractions shown in %
SCORE_COLUMNS = (("ap", "AP", True), ("fpr95", "FPR95", False), ("auroc", "AUROC", True), ("sIoU", "sIoU", True),
                 ("PPV", "PPV", True), ("mean_F1", "mean F1", True))
AT_COLUMNS = (("fpr", "FPR@t", False), ("tpr", "TPR@t", True), ("precision", "precision@t", True), ("f1", "F1@t", True))
OBJECT_COLUMNS = (("iou", "IoU", True), ("sIoU", "sIoU", True), ("PPV", "PPV", True), ("mean_F1", "mean F1", True),
                  ("pixel_ap", "pixel AP", True), ("oodis_ap", "OoDIS AP", True), ("coco_ap", "COCO AP", True))
GT_COLOURS = np.array([[70, 70, 70], [255, 140, 0]], np.uint8)  # inlier, anomaly; void black


def data_uri(rgb: np.ndarray, fmt: str = ".jpg") -> str:
    """(H,W,3) uint8 RGB -> base64 data URI (JPEG quality 85 or PNG)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if fmt == ".jpg" else []
    ok, buf = cv2.imencode(fmt, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    mime = "jpeg" if fmt == ".jpg" else "png"
    return f"data:image/{mime};base64,{base64.b64encode(buf.tobytes()).decode()}"


def cell(value: Any, ci: list[float] | None = None) -> dict[str, Any]:
    """A table cell: raw ``value`` (for data-value), its % text and the interval text ("—" when absent)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {"value": value if ok else None, "text": f"{100 * value:.2f}" if ok else "—",
            "ci": f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "—", "best": False}


def mark_best(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str, bool]]) -> None:
    """Set ``best`` on the best cell of each column (max, or min where lower is better; ties all marked)."""
    for key, _, higher in columns:
        vals = [r["cells"][key]["value"] for r in rows if r["cells"][key]["value"] is not None]
        if len(set(vals)) < 2:
            continue  # one value, or all equal: nothing to mark
        best = max(vals) if higher else min(vals)
        for r in rows:
            r["cells"][key]["best"] = r["cells"][key]["value"] == best


def score_rows(runs: Sequence[Run]) -> tuple[list[dict[str, Any]], bool]:
    """One row per (run, score) with SCORE_COLUMNS (+ AT_COLUMNS when any score has ``at_threshold``)."""
    rows, has_at = [], False
    for r in runs:
        for s, m in (r.results.get("scores") or {}).items():
            cells = {k: cell(m.get(k), ci_of(m, k)) for k, _, _ in SCORE_COLUMNS}
            at = m.get("at_threshold") or {}
            has_at = has_at or bool(at)
            cells.update({f"at_{k}": cell(at.get(k), ci_of(at, k)) for k, _, _ in AT_COLUMNS})
            rows.append({"run": r.label, "score": s, "cells": cells})
    cols = list(SCORE_COLUMNS) + ([(f"at_{k}", h, b) for k, h, b in AT_COLUMNS] if has_at else [])
    mark_best(rows, cols)
    return rows, has_at


def object_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per (run, S2M method): the ``s2m`` and ``threshold@bestF1`` rows of results.json ``s2m``."""
    rows = []
    for r in runs:
        for method, m in (r.results.get("s2m") or {}).items():
            if not isinstance(m, dict):
                continue
            ap = m.get("instance_ap") or {}
            flat = dict(m, oodis_ap=(ap.get("oodis") or {}).get("ap"), coco_ap=(ap.get("coco") or {}).get("ap"))
            cells = {k: cell(flat.get(k), ci_of(m, k)) for k, _, _ in OBJECT_COLUMNS}
            rows.append({"run": r.label, "score": f"{method} ({r.results.get('s2m_score')})", "cells": cells})
    mark_best(rows, OBJECT_COLUMNS)
    return rows


def thresholds(run: Run) -> list[dict[str, str]]:
    """Every threshold of the run with the split it was chosen on."""
    res, split = run.results, run.results.get("split")
    out = []
    for s, m in (res.get("scores") or {}).items():
        out.append({"score": s, "name": "95 %-TPR (operating point)", "value": f"{m.get('threshold_at_tpr95', 0):.6g}",
                    "split": f"chosen on {split} labels (the evaluated frames)"})
        out.append({"score": s, "name": "best F1 (SMIYC component metrics)", "value": f"{m.get('best_f1_threshold', 0):.6g}",
                    "split": f"oracle: chosen on the test labels ({split})"})
        at = m.get("at_threshold") or {}
        if at:
            src = at.get("source") or (res.get("threshold_from") or {}).get("source") or res.get("threshold_from")
            out.append({"score": s, "name": "deployment (--threshold-from)", "value": f"{at.get('threshold', float('nan')):.6g}",
                        "split": f"chosen on {src or 'inlier-only data'} (not the evaluated labels)"})
    return out


def card(run: Run) -> dict[str, Any]:
    """The result card's fields (label -> text)."""
    r = run.results
    n, sizes = r.get("n_images"), r.get("component_sizes")
    ck, model = r.get("checkpoint") or {}, r.get("model") or {}
    size = f"{r['input_size'][0]}x{r['input_size'][1]} (resized)" if r.get("input_size") else "full image size"
    if r.get("sliding_window"):
        size = f"sliding window {r['sliding_window'][0]}x{r['sliding_window'][1]}, overlap {r.get('overlap')}"
    fields = {
        "dataset": f"{r.get('dataset')} / split {r.get('split')}", "frames": str(n),
        "protocol": f"{r.get('protocol')}: {PROTOCOLS.get(r.get('protocol'), 'no metrics (no labels)')}",
        "component sizes": (f"min segment {sizes[0]} px, min instance {sizes[1]} px (benchmarks: 500 / 100; smaller "
                            "sizes give higher sIoU on the same maps)") if sizes else "— (not computed)",
        "checkpoint": f"{ck.get('path')} (sha256 {ck.get('sha256')})",
        "model": f"{model.get('model_source')}: {model.get('spec')}; origin {model.get('origin') or '— (trained here)'}",
        "input": size, "dtype": str(r.get("dtype")), "TTA": "horizontal flip" if r.get("flip") else "none",
        "seed": str(r.get("seed", "— (not recorded)")), "device": f"{r.get('device')} x {r.get('world_size')}",
        "denseood": str(r.get("denseood_version")), "command": str(r.get("command")),
    }
    return {"label": run.label, "fields": fields, "small": isinstance(n, int) and n <= 30, "n": n,
            "thresholds": thresholds(run)}


def plots(runs: Sequence[Run]) -> dict[str, str]:
    """The PR and ROC ``<svg>`` of every score of every run, with the 95 %-TPR point (and the deployment point)."""
    pr, roc = [], []
    for r in runs:
        for s, (v, p, q) in r.pooled.items():
            c = curve_points(v, p, q)
            m = r.results["scores"][s]
            label = f"{r.label}: {s}" if len(runs) > 1 else s
            pts_roc = [(m["fpr95"], 0.95, f"95 % TPR, FPR {100 * m['fpr95']:.1f} %")]
            at = m.get("at_threshold") or {}
            if "fpr" in at and "tpr" in at:
                pts_roc.append((at["fpr"], at["tpr"], "deployment threshold"))
            i95 = min(int(np.searchsorted(c["recall"], 0.95)), c["recall"].size - 1)
            pts_pr = [(0.95, float(c["precision"][i95]), "95 % TPR")]
            if "precision" in at and "tpr" in at:
                pts_pr.append((at["tpr"], at["precision"], "deployment threshold"))
            pr.append({"label": f"{label} (AP {100 * m['ap']:.1f})", "x": c["recall"], "y": c["precision"],
                       "points": pts_pr})
            roc.append({"label": f"{label} (AUROC {100 * m['auroc']:.1f})", "x": c["fpr"], "y": c["recall"],
                        "points": pts_roc})
    if not pr:
        return {}
    return {"pr": curve_plot("pr", pr, "precision-recall"), "roc": curve_plot("roc", roc, "ROC")}


def frame_view(run: Run, fr: dict[str, Any], vmin: float, vmax: float) -> dict[str, Any]:
    """The thumbnails of one frame: image, ground truth, heat map, errors at the threshold, S2M objects."""
    from denseood.viz import draw_objects, heatmap

    with run.npz(fr) as z:
        img, mask, amap = z["image"], z["mask"], z[f"map_{run.primary}"].astype(np.float32)
        objects = z["objects"] if "objects" in z.files else None
    gt = np.zeros(img.shape, np.uint8)
    gt[mask == 0], gt[mask == 1] = GT_COLOURS[0], GT_COLOURS[1]
    err = (img * 0.4).astype(np.uint8)
    hit = amap >= run.threshold
    err[hit & (mask == 0)] = (255, 0, 0)
    err[~hit & (mask == 1)] = (0, 200, 255)
    err[hit & (mask == 1)] = (0, 200, 0)
    images = [("image", data_uri(img)), ("ground truth (orange anomaly, black void)", data_uri(gt, ".png")),
              (f"heat map ({run.primary})", data_uri(heatmap(amap, vmin, vmax))),
              ("at the 95 %-TPR threshold: red false positive, cyan missed, green hit", data_uri(err))]
    if objects is not None:
        images.append((f"S2M objects ({fr['n_objects']})", data_uri(draw_objects(img, objects.astype(np.int32)))))
    return {"id": fr["id"], "name": fr["name"], "images": images, "fp": fr["fp"], "missed": fr["missed"]}


def run_frames(run: Run, index: int, max_views: int = MAX_VIEWS) -> dict[str, Any] | None:
    """Per-frame table rows, worst-frame lists, frame views (the worst frames, then the first frames up to
    ``max_views``), colour bar and recall by size of run ``index``."""
    if not run.frames:
        return None
    for i, fr in enumerate(run.frames):
        fr["id"] = f"r{index}-f{i}"
        inst = fr["instances"]
        fr["found"] = sum(1 for x in inst if x["s2m_iou"] is not None and x["s2m_iou"] > 0.5) if fr["n_objects"] is not None else None
        fr["lost"] = len(inst) - fr["found"] if fr["found"] is not None else None
    v, p, q = run.pooled[run.primary]
    vmin, vmax = quantile(v, p + q, 0.01), quantile(v, p + q, 0.99)
    vmax = vmax if vmax > vmin else vmin + 1e-6
    worst_fp, worst_missed = worst(run.frames, "fp"), worst(run.frames, "missed")
    shown = list(dict.fromkeys([f["id"] for f in worst_fp + worst_missed]
                               + [f["id"] for f in run.frames][:max_views]))
    by_id = {f["id"]: f for f in run.frames}
    from denseood.viz import heatmap

    bar = heatmap(np.linspace(vmin, vmax, 64)[None], vmin, vmax)[0]
    views = [frame_view(run, by_id[i], vmin, vmax) for i in shown]
    n_worst = len({f["id"] for f in worst_fp + worst_missed})
    return {"rows": run.frames, "worst_fp": worst_fp, "worst_missed": worst_missed, "has_views": set(shown),
            "worst_views": views[:n_worst], "views": views[n_worst:], "score": run.primary,
            "threshold": run.threshold, "colour_bar": colour_bar(bar, vmin, vmax, run.threshold, run.primary),
            "recall": recall_by_size(run.frames), "has_s2m": any(f["n_objects"] is not None for f in run.frames)}


def render(runs: Sequence[Run]) -> str:
    """The page of ``runs`` (one or several, side by side)."""
    from importlib import resources

    import jinja2

    text = resources.files(__package__).joinpath("templates/report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    rows, has_at = score_rows(runs)
    cols = list(SCORE_COLUMNS) + ([(f"at_{k}", h, b) for k, h, b in AT_COLUMNS] if has_at else [])
    return env.from_string(text).render(
        runs=[{"label": r.label, "card": card(r), "frames": run_frames(r, i, MAX_VIEWS // len(runs)),
              "results": r.results}
              for i, r in enumerate(runs)],
        score_rows=rows, score_columns=cols, object_rows=object_rows(runs), object_columns=OBJECT_COLUMNS,
        plots=plots(runs), several=len(runs) > 1)
