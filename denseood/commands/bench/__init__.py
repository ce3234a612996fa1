"""``denseood bench infer|metrics|official|s2m|segment``: speed and memory figures, measured as ratios within one run
(ours vs a baseline), never as timed tests.

Each sub-verb has its own flags (``denseood bench infer --help``); the measuring code lives in the sibling
modules and is imported only when a sub-verb runs. See docs/architecture.md.
"""
from __future__ import annotations

import argparse
import importlib

from .._common import HelpFormatter, add_code_options, add_device, add_verb, nonnegative_float, positive_int


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures to this JSON file")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "bench", help="benchmarks: infer | metrics | official | s2m | segment (ratios measured in one run)")
    sub = p.add_subparsers(dest="what", required=True, metavar="WHAT")

    q = sub.add_parser("infer", help="segmenter + jsd images/s and peak memory per size and dtype (x fp32)",
                       formatter_class=HelpFormatter)
    q.add_argument("--arch", default="deeplabv3plus", help="segmentation-models-pytorch architecture (random weights)")
    q.add_argument("--encoder", default="resnet50", help="smp encoder name (random weights)")
    q.add_argument("--checkpoint", default=None, metavar="SPEC",
                   help="time this model instead of a random --arch/--encoder one: a denseood checkpoint PATH, "
                        "hf:DIR, torchvision:NAME:STATE_DICT.pth or python:MODULE:FACTORY")
    add_code_options(q)
    q.add_argument("--sizes", default="512x1024,1024x2048", help="comma-separated HxW input sizes")
    q.add_argument("--batch-size", type=positive_int, default=1, help="images per forward pass")
    q.add_argument("--iters", type=positive_int, default=None,
                   help="timed batches per setting (default: 20 on CUDA, 3 on CPU)")
    q.add_argument("--compile", action="store_true", help="also time torch.compile variants of every dtype")
    add_device(q)
    _json(q)

    q = sub.add_parser("metrics", help="pixel metrics (streaming, exact, smiyc) vs scikit-learn; component metrics",
                       formatter_class=HelpFormatter)
    q.add_argument("--frames", type=positive_int, default=50, help="synthetic score maps per size")
    q.add_argument("--sizes", default="1024x2048", help="comma-separated HxW frame sizes")
    _json(q)

    q = sub.add_parser("official", help="SMIYC pixel + component metrics vs the official road-anomaly-benchmark code "
                       "(needs its checkout)", formatter_class=HelpFormatter)
    q.add_argument("--official", default=None, metavar="DIR",
                   help="local checkout of SegmentMeIfYouCan/road-anomaly-benchmark (default: $DENSEOOD_SMIYC_OFFICIAL); "
                        "nothing is downloaded")
    q.add_argument("--frames", type=positive_int, default=10, help="synthetic score maps")
    q.add_argument("--size", default="1024x2048", help="HxW frame size")
    q.add_argument("--seed", type=int, default=0, help="random seed of the synthetic frames")
    _json(q)

    q = sub.add_parser("s2m", help="S2M stage images/s: peak prompter + GrabCut (CPU), SAM fp32 vs bf16 (CUDA)",
                       formatter_class=HelpFormatter)
    q.add_argument("--sizes", default=None, help="comma-separated HxW frame sizes (default: the module's sizes)")
    q.add_argument("--frames", type=positive_int, default=4, help="procedural scenes per size")
    q.add_argument("--iters", type=positive_int, default=None, help="timed frames per setting (default: per backend)")
    add_device(q)
    _json(q)

    q = sub.add_parser("segment", help="peak RSS of `denseood segment` per image size, banded vs full-size logits",
                       formatter_class=HelpFormatter)
    q.add_argument("--sizes", default="4,16,64", help="comma-separated image sizes in megapixels (square JPEGs)")
    q.add_argument("--full-logits-max-mp", type=nonnegative_float, default=16,
                   help="also run the full-size-logits baseline for sizes up to this many megapixels (0 = never)")
    q.add_argument("--train-size", default="64x128", help="HxW train size of the tiny random segmenter")
    q.add_argument("--work-size", type=positive_int, default=2048, help="segment --work-size")
    _json(q)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``denseood.commands.bench.<what>.run(args)``."""
    return int(importlib.import_module(f"denseood.commands.bench.{args.what}").run(args) or 0)
