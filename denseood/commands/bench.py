"""``denseood bench``: transitional verb module; the handler still lives in ``denseood.bench``."""
from __future__ import annotations

import argparse

from ._common import add_verb


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "bench", help="benchmarks: infer | metrics | s2m")
    p.add_argument("what", choices=["infer", "metrics", "s2m"])
    p.add_argument("--device", default="auto")
    p.add_argument("--sizes", default=None, help="comma-separated HxW list")
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--arch", default="deeplabv3plus")
    p.add_argument("--encoder", default="resnet50")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")

    return p


def run(args: argparse.Namespace) -> int:
    from denseood.bench import main

    return main(args)
