"""``denseood datasets``: transitional verb module; the handler still lives in ``denseood.data.inventory``."""
from __future__ import annotations

import argparse

from ._common import add_verb


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "datasets", help="list the benchmarks found under a root and what is missing")
    p.add_argument("--root", required=True, help="folder holding benchmark roots (itself or its immediate subfolders)")
    p.add_argument("--json", default=None, help="also write the scan result to this JSON file")

    return p


def run(args: argparse.Namespace) -> int:
    from denseood.data.inventory import main

    return main(args)
