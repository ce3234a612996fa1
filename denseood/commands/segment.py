"""``denseood segment``: transitional verb module; the handler still lives in ``denseood.s2m.tool``."""
from __future__ import annotations

import argparse

from ._common import add_verb


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "segment", help="segment OOD objects in driving images (S2M)")
    p.add_argument("--images", required=True, nargs="+", help="image folder(s) or file(s)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--score", default="jsd")
    p.add_argument("--prompter", default="auto",
                   help="learned | peak | auto (learned when the checkpoint holds one) | PATH of a prompter file")
    p.add_argument("--prompt-model", default="grabcut", help="grabcut | sam:TYPE:PATH")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--input-size", default=None, help="HxW the segmenter sees (default: its training size); 'full' keeps the image size")

    return p


def run(args: argparse.Namespace) -> int:
    from denseood.s2m.tool import main

    return main(args)
