"""``denseood eval``: transitional verb module; the handler still lives in ``denseood.eval.runner``."""
from __future__ import annotations

import argparse

from ._common import add_verb


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "eval", help="evaluate anomaly scores (and S2M) on a benchmark")
    p.add_argument("--dataset", required=True, help="cityscapes|smiyc-anomaly|smiyc-obstacle|smiyc-laf|fs-laf|fs-static|streethazards|synthetic|folder")
    p.add_argument("--root", required=True, help="dataset root in its official layout")
    p.add_argument("--split", default=None, help="split name (default: the benchmark's validation split)")
    p.add_argument("--checkpoint", required=True, help="segmenter checkpoint (.pt) written by denseood")
    p.add_argument("--score", default="jsd", help="comma-separated score names, e.g. msp,maxlogit,jsd")
    p.add_argument("--out", required=True, help="output folder (results.json, results.md, curves)")
    p.add_argument("--overwrite", action="store_true", help="allow writing into an existing --out")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N frames")
    p.add_argument("--exact", action="store_true", help="exact (sort-based) pixel metrics instead of streaming")
    p.add_argument("--protocol", default=None, choices=["streaming", "exact", "smiyc", "caos"], help="pixel-metric protocol (default: streaming, or the benchmark's own)")
    p.add_argument("--no-components", action="store_true", help="skip component metrics (sIoU, PPV, mean F1)")
    p.add_argument("--input-size", default=None, help="HxW the model sees (default: the checkpoint's training size); 'full' keeps the image size")
    p.add_argument("--sliding-window", default=None, help="HxW window for full-resolution sliding-window inference")
    p.add_argument("--overlap", type=float, default=1 / 3, help="sliding-window overlap fraction in [0, 1)")
    p.add_argument("--flip", action="store_true", help="test-time horizontal flip averaging")
    p.add_argument("--compile", action="store_true", help="torch.compile the segmenter")
    p.add_argument("--min-segment-size", type=int, default=None, help="component metrics: drop predicted components smaller than this (default: the benchmark's)")
    p.add_argument("--min-instance-size", type=int, default=None, help="component metrics: ground-truth components smaller than this become void (default: the benchmark's)")
    p.add_argument("--save-maps", action="store_true", help="write per-image heat-map overlays")
    p.add_argument("--s2m", action="store_true", help="also evaluate S2M object masks")
    p.add_argument("--prompter", default="auto", help="learned|peak|auto (learned when the checkpoint has one)")
    p.add_argument("--prompt-model", default="grabcut", help="grabcut | sam:TYPE:PATH")

    return p


def run(args: argparse.Namespace) -> int:
    from denseood.eval.runner import main

    return main(args)
