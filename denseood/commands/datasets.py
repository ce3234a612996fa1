"""``denseood datasets --root DIR [--json FILE]``: print which benchmarks are present under DIR (or its immediate
subfolders), with frame counts per split, and what is missing for the others.

Library function: :func:`denseood.data.inventory.scan` (``scan(root, json_path=None) -> list[dict]``) and
:func:`denseood.data.inventory.format_report`. See docs/architecture.md.
"""
from __future__ import annotations

import argparse

from ._common import add_verb


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "datasets", help="list the benchmarks found under a root and what is missing",
                 description="List the benchmarks found under --root (the folder itself or its immediate subfolders) "
                             "with frame counts per split,\nand for each benchmark not found, what is missing and the "
                             "expected layout.")
    p.add_argument("--root", required=True, metavar="DIR",
                   help="folder holding benchmark roots (itself or its immediate subfolders)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the scan result to this JSON file")
    return p


def run(args: argparse.Namespace) -> int:
    from denseood.data.inventory import format_report, scan

    rows = scan(args.root, json_path=args.json)
    print(format_report(rows, args.root))
    return 0
