"""``write_report``: run folders -> one self-contained ``report.html`` (the data from ``build.py``, the page from
``html.py``). See docs/architecture.md."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from denseood.io import atomic_write_text

from .build import load_run
from .html import render


def unique_labels(dirs: Sequence[Path]) -> list[str]:
    """Folder names, with the parent prepended where two runs share a name."""
    names = [d.name or str(d) for d in dirs]
    return [f"{d.parent.name}/{d.name}" if names.count(n) > 1 else n for d, n in zip(dirs, names)]


def write_report(run_dirs: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None) -> Path:
    """Render the runs in ``run_dirs`` (side by side when several) into the self-contained HTML file ``out``."""
    dirs = [Path(d) for d in run_dirs]
    names = list(labels) if labels else unique_labels([d.resolve() for d in dirs])
    runs = [load_run(d, n) for d, n in zip(dirs, names)]
    return atomic_write_text(out, render(runs))
