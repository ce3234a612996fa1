"""The results of ``denseood eval``: plain-JSON conversion, curve thinning and the results.md table.

See docs/architecture.md.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: keys of each score's entry in results.json
PIXEL_KEYS = ("ap", "fpr95", "auroc", "threshold_at_tpr95", "best_f1", "best_f1_threshold", "n_pixels", "n_anomaly")
COMPONENT_KEYS = ("sIoU", "PPV", "mean_F1", "F1_per_threshold")

SUBMISSION_NOTE = (
    "The official SegmentMeIfYouCan layout: one float16 (H,W) anomaly map per frame at the image's resolution, "
    "higher = more anomalous, as dataset 'value' (gzip 9) of submission/anomaly_p/<method>/<dataset>/<frame id>.hdf5, "
    "where <dataset> is the benchmark's storage name of the split (AnomalyTrack-all, ObstacleTrack-all, "
    "LostAndFound-test). Run the road-anomaly-benchmark evaluator with DIR_OUTPUTS=<out>/submission, or upload "
    "the anomaly_p folder.")



def thin_curve(curve: dict[str, np.ndarray], n: int = 2000) -> dict[str, np.ndarray]:
    """At most ``n`` points of each curve array (same indices for all keys), for plotting."""
    arrays = {k: np.asarray(v) for k, v in curve.items()}
    length = min((a.shape[0] for a in arrays.values() if a.ndim == 1), default=0)
    if length <= n:
        return arrays
    idx = np.unique(np.linspace(0, length - 1, n).round().astype(int))
    return {k: (a[idx] if a.ndim == 1 and a.shape[0] == length else a) for k, a in arrays.items()}


def plain_json(v: Any) -> Any:
    """Plain JSON types (numpy/torch -> python, NaN/inf -> None so results.json stays strict JSON)."""
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    if isinstance(v, np.ndarray):
        return plain_json(v.tolist())
    if isinstance(v, np.generic):
        return plain_json(v.item())
    if isinstance(v, dict):
        return {str(k): plain_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain_json(x) for x in v]
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100.0 * float(v):.2f}"


def results_markdown(results: dict) -> str:
    """Markdown summary: one row per score (AP, FPR95, AUROC, sIoU, PPV, mean F1 in %, images/s, peak memory)."""
    head = (f"# denseood eval: {results['dataset']} ({results['split']}), {results['n_images']} images\n\n"
            + (f"maps `{results['maps_input']['folder']}`, " if results.get("maps_input") else
               f"checkpoint `{results['checkpoint']['path']}` (sha256 {results['checkpoint']['sha256']}), ")
            + f"device {results['device']}, dtype {results['dtype']}, world size {results['world_size']}, "
            f"protocol {results['protocol']}, denseood {results['denseood_version']}\n\n")
    if not results["has_labels"]:
        return head + ("No anomaly labels in this split: no metrics. Score maps for submission are in "
                       f"`{results['submission']['path']}`.\n\n{SUBMISSION_NOTE}\n")
    rows = ["| score | AP % | FPR95 % | AUROC % | sIoU % | PPV % | mean F1 % | images/s | peak mem MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s, m in results["scores"].items():
        rows.append(f"| {s} | {_pct(m.get('ap'))} | {_pct(m.get('fpr95'))} | {_pct(m.get('auroc'))} | "
                    f"{_pct(m.get('sIoU'))} | {_pct(m.get('PPV'))} | {_pct(m.get('mean_F1'))} | "
                    f"{results['images_per_s']:.2f} | {results['peak_mem_mb']:.0f} |")
    mem = "peak GPU memory allocated" if results.get("peak_mem_kind") == "cuda_max_allocated" else "peak process RSS"
    text = head + "\n".join(rows) + f"\n\nimages/s over all ranks (inference only); peak memory = {mem}.\n"
    if results.get("s2m"):
        used = results.get("s2m_score") or next(iter(results["scores"]), "")
        text += (f"\n## S2M objects (on the {used} map)\n\n| method | IoU % | sIoU % | PPV % | mean F1 % | pixel AP % |\n"
                 "|---|---:|---:|---:|---:|---:|\n")
        for name, m in results["s2m"].items():
            if isinstance(m, dict):
                text += (f"| {name} | {_pct(m.get('iou'))} | {_pct(m.get('sIoU'))} | {_pct(m.get('PPV'))} | "
                         f"{_pct(m.get('mean_F1'))} | {_pct(m.get('pixel_ap'))} |\n")
        text += _s2m_protocol_table(results["s2m"])
        src = (results["s2m"].get("s2m") or {}).get("instance_source")
        if src:
            text += ("\nGround-truth instances (frames): " + ", ".join(f"{k} {v}" for k, v in src.items()) + "\n")
    return text


def _s2m_protocol_table(s2m: dict) -> str:
    """The S2M paper protocol (``paper_protocol``) and instance AP (``instance_ap``: OoDIS first, the headline,
    then COCO) of each S2M row as a markdown table; "" if no row has them."""
    rows = [(name, m.get("paper_protocol") or {}, m.get("instance_ap") or {}) for name, m in s2m.items()
            if isinstance(m, dict) and (isinstance(m.get("paper_protocol"), dict) or m.get("instance_ap"))]
    if not rows:
        return ""
    proto = next((p["protocol"] for _, p, _ in rows if p.get("protocol")), "S2M paper protocol")
    text = (f"\n### objects ({proto}; instance AP: OoDIS scorer, COCO mask AP)\n\n| method | best IoU % | "
            "best threshold | AuIoU % | mean F1 % | OoDIS AP % | OoDIS AP50 % | COCO AP % | COCO AP50 % |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    for name, p, iap in rows:
        thr = p.get("best_threshold")
        o, c = iap.get("oodis") or {}, iap.get("coco") or {}
        text += (f"| {name} | {_pct(p.get('best_iou'))} | {'–' if thr is None else f'{float(thr):.2f}'} | "
                 f"{_pct(p.get('au_iou'))} | {_pct(p.get('mean_f1'))} | {_pct(o.get('ap'))} | {_pct(o.get('ap50'))} | "
                 f"{_pct(c.get('ap'))} | {_pct(c.get('ap50'))} |\n")
    return text
