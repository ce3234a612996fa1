"""``denseood train-prompter``: transitional verb module; the handler still lives in ``denseood.s2m.prompts``."""
from __future__ import annotations

import argparse

from ._common import add_verb


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "train-prompter", help="train the S2M learned prompter for a segmenter checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--root", required=True)
    p.add_argument("--out", default=None, help="where to write the prompter (default: stored inside --checkpoint)")
    p.add_argument("--negatives", default="flow", help="flow|paste:DIR")
    p.add_argument("--score", default="jsd")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="tiny", choices=["tiny", "resnet18"], help="detector backbone (random init)")
    p.add_argument("--input", default="score", choices=["score", "score+image"], help="detector input channels")
    p.add_argument("--pool-size", type=int, default=128, help="pasted training images scored once and cropped repeatedly")
    p.add_argument("--score-thresh", default="auto",
                   help="the prompter's confidence cut on detector scores, stored with it (not an anomaly threshold); "
                        "auto = best box F1 on held-out pasted images")

    return p


def run(args: argparse.Namespace) -> int:
    from denseood.s2m.prompts import train_prompter_main

    return train_prompter_main(args)
