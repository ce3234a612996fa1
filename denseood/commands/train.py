"""``denseood train``: transitional verb module; the handler still lives in ``denseood.train.trainer``."""
from __future__ import annotations

import argparse

from ._common import add_verb


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "train", help="train / fine-tune a segmenter (NFlowJS with --negatives flow)")
    p.add_argument("--config", default=None, help="YAML config; command-line options override it")
    p.add_argument("--dataset", default=None, help="cityscapes|streethazards|synthetic")
    p.add_argument("--root", default=None)
    p.add_argument("--val-root", default=None, help="evaluation root for validation AP (default: --root for synthetic)")
    p.add_argument("--arch", default=None)
    p.add_argument("--encoder", default=None)
    p.add_argument("--encoder-weights", default=None, help="local encoder weight file")
    p.add_argument("--negatives", default=None, help="flow|void|paste:DIR|none")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (split over DDP ranks)")
    p.add_argument("--crop", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--init", default=None, help="checkpoint to fine-tune")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--amp", default=None, choices=["none", "bf16", "fp16"])
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--sync-bn", action="store_true", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")

    return p


def run(args: argparse.Namespace) -> int:
    from denseood.train.trainer import main

    return main(args)
