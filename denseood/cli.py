"""``denseood`` console entry: eval | segment | train | train-prompter | demo | bench | datasets.

Argument definitions live here; each handler is imported lazily from its stage module so that
``denseood --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import DenseOODError

# subcommand -> "module:function"; the function takes the parsed argparse.Namespace and returns an exit code
HANDLERS = {
    "eval": "denseood.eval.runner:main",
    "segment": "denseood.s2m.tool:main",
    "train": "denseood.train.trainer:main",
    "train-prompter": "denseood.s2m.prompts:train_prompter_main",
    "demo": "denseood.demo:main",
    "bench": "denseood.bench:main",
    "datasets": "denseood.data.inventory:main",
}


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate anomaly scores (and S2M) on a benchmark")
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


def _add_segment(sub) -> None:
    p = sub.add_parser("segment", help="segment OOD objects in driving images (S2M)")
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


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train / fine-tune a segmenter (NFlowJS with --negatives flow)")
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


def _add_train_prompter(sub) -> None:
    p = sub.add_parser("train-prompter", help="train the S2M learned prompter for a segmenter checkpoint")
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


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="embedded default end to end: synthetic world -> train -> eval -> segment")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--weights", default="weights/demo.pt")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny sizes (for tests)")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks: infer | metrics | s2m")
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


def _add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="list the benchmarks found under a root and what is missing")
    p.add_argument("--root", required=True, help="folder holding benchmark roots (itself or its immediate subfolders)")
    p.add_argument("--json", default=None, help="also write the scan result to this JSON file")


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="denseood", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"denseood {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_eval, _add_segment, _add_train, _add_train_prompter, _add_demo, _add_bench, _add_datasets):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mod_name, fn_name = HANDLERS[args.command].split(":")
    fn = getattr(importlib.import_module(mod_name), fn_name)
    try:
        return int(fn(args) or 0)
    except DenseOODError as e:
        print(f"denseood {args.command}: error: {e}", file=sys.stderr)
        return 2
