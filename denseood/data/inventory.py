"""Dataset inventory: which benchmarks are present under a folder (or its immediate subfolders), with frame counts
per split, and what is missing for the others. :func:`scan` returns the rows, :func:`format_report` renders them;
the ``denseood datasets`` verb (``denseood.commands.datasets``) prints the report.

See docs/architecture.md.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DatasetError, DenseOODError
from ..io import atomic_write_json
from .registry import DATASETS

def _candidates(root: Path) -> list[Path]:
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [root, *subs]


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0]


def scan(root: str | os.PathLike, json_path: str | os.PathLike | None = None) -> list[dict]:
    """One dict per benchmark (every name of DATASETS except ``folder``):
    ``{"name", "found": bool, "locations": [{"path", "splits": {split: n_frames}, "problems": {split: msg}}],
    "missing": [msg, ...], "layout": str}``. A benchmark is found at a candidate folder (ROOT or an immediate
    subfolder) when at least one of its splits opens; ``missing`` says what is absent when it is found nowhere.
    ``json_path``: also write the rows there as JSON (atomically)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"datasets: root {root} does not exist or is not a folder")
    cands = _candidates(root)
    out = []
    for name, cls in DATASETS.items():
        if name == "folder":
            continue
        locations, partial = [], []
        for cand in cands:
            counts: dict[str, int] = {}
            problems: dict[str, str] = {}
            for split in cls.splits:
                try:
                    counts[split] = len(cls(cand, split))
                except DenseOODError as e:
                    problems[split] = _first_line(e)
            if counts:
                locations.append({"path": str(cand), "splits": counts, "problems": problems})
            elif any((cand / m).exists() for m in cls.MARKERS):
                partial.append(f"{cand}: " + "; ".join(f"{s}: {m}" for s, m in problems.items()))
        missing: list[str] = []
        if not locations:
            missing = partial or [f"no folder with this layout in {root} or its subfolders"]
        out.append({"name": name, "found": bool(locations), "locations": locations, "missing": missing,
                    "layout": cls.LAYOUT})
    if json_path is not None:
        atomic_write_json(json_path, out)
    return out


def format_report(rows: list[dict], root: str | os.PathLike) -> str:
    """Human-readable text of :func:`scan`'s result."""
    lines = [f"datasets under {root}:"]
    for r in rows:
        if r["found"]:
            for loc in r["locations"]:
                counts = ", ".join(f"{s} {n}" for s, n in loc["splits"].items())
                lines.append(f"  {r['name']:<15} found    {loc['path']}  ({counts})")
                for s, msg in loc["problems"].items():
                    lines.append(f"  {'':<15}          split {s}: {msg}")
        else:
            lines.append(f"  {r['name']:<15} MISSING")
            for msg in r["missing"]:
                lines.append(f"  {'':<15}          {msg}")
            lines.append(f"  {'':<15}          expected layout:")
            lines.extend(f"  {'':<15}          {ln.strip()}" for ln in r["layout"].splitlines())
    return "\n".join(lines)
