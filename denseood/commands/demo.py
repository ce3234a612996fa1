"""``denseood demo``: transitional verb module; the handler still lives in ``denseood.demo``."""
from __future__ import annotations

import argparse

from ._common import add_verb


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "demo", help="embedded default end to end: synthetic world -> train -> eval -> segment")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--weights", default="weights/demo.pt")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny sizes (for tests)")

    return p


def run(args: argparse.Namespace) -> int:
    from denseood.demo import main

    return main(args)
