"""``denseood report``: one self-contained HTML page from saved eval runs (several runs side by side).

``add_parser``/``run`` here (standard library only at import time); the data in ``build`` (results.json and the
per-frame files ``frames/`` that every ``denseood eval`` writes, :mod:`.layout`), the page in ``html`` (jinja2
template ``templates/report.html.j2``) and ``svg`` (curves, colour bar). ``denseood eval`` writes the same page
as ``report.html`` into its --out. See docs/architecture.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .._common import add_verb

DESCRIPTION = """\
Build one HTML page from the --out folders of `denseood eval` runs: the result card (dataset, split, protocol,
component sizes, checkpoint, input size, dtype, flip, version; every threshold with the split it was chosen on),
the score table (with 95 % intervals where results.json has them), PR and ROC curves, recall by object size,
a sortable per-frame table, the worst frames (image, ground truth, heat map, S2M objects). Several runs are laid
side by side. The page needs no network: styles, script and images are inside the file."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "report", help="HTML report of saved eval runs (side by side)", description=DESCRIPTION)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="--out folder of a `denseood eval` run")
    p.add_argument("--out", required=True, help="the HTML file to write (e.g. report.html)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--label", action="append", default=None,
                   help="name of a run on the page, once per RUN_DIR in order (default: the folder names)")
    return p


def run(args: argparse.Namespace) -> int:
    from ...errors import ConfigError
    from .page import write_report

    if args.label is not None and len(args.label) != len(args.runs):
        raise ConfigError(f"--label given {len(args.label)} times for {len(args.runs)} RUN_DIRs; give one per run")
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; pass the HTML file to write, e.g. {out / 'report.html'}")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"--out {out} exists; pass --overwrite to replace it, or another --out")
    path = write_report(args.runs, out, args.label)
    print(f"report written to {path}")
    return 0
