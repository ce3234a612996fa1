"""Hand-made SVG for the report: PR / ROC curves with operating points, and a heat-map colour bar.

Plain strings (no plotting library, no script); coordinates in a fixed view box that CSS scales.
See docs/architecture.md.
"""
from __future__ import annotations

from html import escape
from typing import Sequence

import numpy as np

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22")
W, H, PAD = 420, 320, 44


def _xy(x: float, y: float) -> tuple[float, float]:
    """Unit square (x right, y up) -> view-box pixels."""
    return PAD + x * (W - PAD - 10), H - PAD - y * (H - PAD - 10)


def curve_plot(kind: str, curves: Sequence[dict], title: str) -> str:
    """One ``<svg>``: ``curves`` = [{"label", "x" (N,), "y" (N,), "points": [(x, y, name), ...]}], x and y in
    [0, 1]; ``kind`` "pr" (x recall, y precision) or "roc" (x FPR, y TPR) names the axes."""
    xl, yl = ("recall", "precision") if kind == "pr" else ("false-positive rate", "true-positive rate")
    parts = [f'<svg class="plot" viewBox="0 0 {W} {H + 18 * len(curves)}" role="img" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
             f'<rect x="{PAD}" y="10" width="{W - PAD - 10}" height="{H - PAD - 10}" fill="#fff" stroke="#999"/>']
    for t in np.linspace(0, 1, 6):
        x0, y0 = _xy(t, 0)
        x1, y1 = _xy(0, t)
        parts.append(f'<text x="{x0:.1f}" y="{y0 + 14:.1f}" font-size="10" text-anchor="middle">{t:.1f}</text>')
        parts.append(f'<text x="{x1 - 4:.1f}" y="{y1 + 3:.1f}" font-size="10" text-anchor="end">{t:.1f}</text>')
    parts.append(f'<text x="{(W + PAD) / 2:.0f}" y="{H - 10}" font-size="11" text-anchor="middle">{xl}</text>')
    parts.append(f'<text x="12" y="{H / 2:.0f}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 12 {H / 2:.0f})">{yl}</text>')
    for i, c in enumerate(curves):
        col = COLOURS[i % len(COLOURS)]
        pts = " ".join("%.1f,%.1f" % _xy(float(x), float(y)) for x, y in zip(c["x"], c["y"]))
        parts.append(f'<polyline fill="none" stroke="{col}" stroke-width="1.6" points="{pts}"/>')
        for px, py, name in c.get("points", []):
            cx, cy = _xy(px, py)
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{col}" stroke="#000">'
                         f'<title>{escape(c["label"])}: {escape(name)}</title></circle>')
        ly = H + 4 + 18 * i
        parts.append(f'<line x1="{PAD}" y1="{ly}" x2="{PAD + 20}" y2="{ly}" stroke="{col}" stroke-width="3"/>'
                     f'<text x="{PAD + 26}" y="{ly + 4}" font-size="11">{escape(c["label"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def colour_bar(colours: np.ndarray, vmin: float, vmax: float, threshold: float | None, label: str) -> str:
    """A horizontal colour bar ``<svg>``: ``colours`` (K,3) uint8 from low to high, tick labels vmin / vmax and
    a mark at ``threshold`` (when inside the range)."""
    k = len(colours)
    stops = "".join(f'<stop offset="{i / (k - 1):.3f}" stop-color="rgb({r},{g},{b})"/>'
                    for i, (r, g, b) in enumerate(colours.tolist()))
    gid = f"cb{abs(hash((vmin, vmax, label))) % 10**8}"
    parts = [f'<svg class="colourbar" viewBox="0 0 320 50" xmlns="http://www.w3.org/2000/svg">',
             f'<defs><linearGradient id="{gid}">{stops}</linearGradient></defs>',
             f'<rect x="10" y="14" width="300" height="12" fill="url(#{gid})" stroke="#333"/>',
             f'<text x="10" y="38" font-size="10">{vmin:.4g}</text>',
             f'<text x="310" y="38" font-size="10" text-anchor="end">{vmax:.4g}</text>',
             f'<text x="160" y="48" font-size="10" text-anchor="middle">{escape(label)}</text>']
    if threshold is not None and vmax > vmin and vmin <= threshold <= vmax:
        x = 10 + 300 * (threshold - vmin) / (vmax - vmin)
        anchor = "start" if x < 60 else "end" if x > 260 else "middle"
        parts.append(f'<line x1="{x:.1f}" y1="11" x2="{x:.1f}" y2="29" stroke="#0c0" stroke-width="2"/>'
                     f'<text x="{x:.1f}" y="9" font-size="10" text-anchor="{anchor}">t = {threshold:.4g}</text>')
    parts.append("</svg>")
    return "".join(parts)
