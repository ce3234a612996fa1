"""Visualisation: heat maps, overlays, object drawings, PR/ROC curves (PNG via matplotlib Agg).

See docs/architecture.md.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np


def heatmap(score: np.ndarray, vmin: float | None = None, vmax: float | None = None, cmap: int = cv2.COLORMAP_INFERNO) -> np.ndarray:
    """(H,W) float score -> (H,W,3) uint8 RGB colour map; range from vmin/vmax or the map's 1st/99th percentiles."""
    s = np.asarray(score, dtype=np.float32)
    finite = s[np.isfinite(s)]
    if vmin is None:
        vmin = float(np.percentile(finite, 1)) if finite.size else 0.0
    if vmax is None:
        vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    if vmax <= vmin:
        vmax = vmin + 1e-6
    u8 = (np.clip((np.nan_to_num(s, nan=vmin) - vmin) / (vmax - vmin), 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, cmap), cv2.COLOR_BGR2RGB)


def blend(image: np.ndarray, overlay: np.ndarray, alpha: float = 0.5, mask: np.ndarray | None = None) -> np.ndarray:
    """Alpha-blend ``overlay`` over ``image`` (both (H,W,3) uint8), only where ``mask`` is true when given."""
    out = image.astype(np.float32)
    ov = overlay.astype(np.float32)
    if mask is None:
        out = (1 - alpha) * out + alpha * ov
    else:
        m = mask.astype(bool)
        out[m] = (1 - alpha) * out[m] + alpha * ov[m]
    return np.clip(out, 0, 255).astype(np.uint8)


def palette(n: int, seed: int = 3) -> np.ndarray:
    """(n,3) uint8 distinct-ish colours (deterministic)."""
    rng = np.random.default_rng(seed)
    hues = (np.arange(n) * 0.61803398875 + rng.random()) % 1.0
    hsv = np.stack([hues * 179, np.full(n, 220), np.full(n, 255)], -1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0] if n else np.zeros((0, 3), np.uint8)


def draw_objects(image: np.ndarray, instances: np.ndarray, boxes: np.ndarray | None = None,
                 scores: np.ndarray | None = None, alpha: float = 0.55) -> np.ndarray:
    """Colour each instance id > 0 of ``instances`` (H,W int) over ``image``; draw xyxy ``boxes`` with ``scores``."""
    out = image.copy()
    ids = [int(i) for i in np.unique(instances) if i > 0]
    cols = palette(max(ids) + 1 if ids else 1)
    for i in ids:
        m = instances == i
        out = blend(out, np.broadcast_to(cols[i], out.shape).astype(np.uint8), alpha, m)
        cnts, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, cnts, -1, tuple(int(c) for c in cols[i]), 2)
    if boxes is not None:
        for k, b in enumerate(np.asarray(boxes).reshape(-1, 4)):
            x0, y0, x1, y1 = (int(round(v)) for v in b)
            cv2.rectangle(out, (x0, y0), (x1, y1), (0, 255, 0), 2)
            if scores is not None and k < len(scores):
                text = f"{float(scores[k]):.2f}"
                cv2.putText(out, text, label_origin(text, (x0, y0), out.shape[:2]), _FONT, _FONT_SCALE, (0, 255, 0), 1,
                            cv2.LINE_AA)
    return out


_FONT, _FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.5


def label_origin(text: str, corner: tuple[int, int], hw: tuple[int, int]) -> tuple[int, int]:
    """Bottom-left origin for ``text`` placed just above a box's top-left ``corner`` (x, y), moved inside an image
    of size ``hw`` = (H, W) so that the whole label stays visible (below the corner when there is no room above)."""
    (tw, th), base = cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)
    x, y = corner
    x = int(min(max(x, 0), max(hw[1] - tw - 1, 0)))
    y = y - 4 if y - 4 - th >= 0 else y + th + 4
    y = int(min(max(y, th), max(hw[0] - base - 1, th)))
    return x, y


def plot_curves(curves: dict[str, dict[str, np.ndarray]], path: str | os.PathLike, kind: str = "pr") -> Path:
    """Save PR (kind='pr': keys recall, precision) or ROC (kind='roc': keys fpr, tpr) curves of several scores to PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import io as _io

    from .io import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(5, 4), dpi=110)
    for name, c in curves.items():
        if kind == "pr":
            ax.plot(c["recall"], c["precision"], label=name)
        else:
            ax.plot(c["fpr"], c["tpr"], label=name)
    if kind == "pr":
        ax.set_xlabel("recall"), ax.set_ylabel("precision"), ax.set_title("precision-recall (anomaly class)")
    else:
        ax.set_xlabel("false positive rate"), ax.set_ylabel("true positive rate"), ax.set_title("ROC")
        ax.axhline(0.95, color="grey", lw=0.5, ls="--")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1.02), ax.grid(alpha=0.3), ax.legend(fontsize=8)
    buf = _io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
