"""``denseood train-prompter``: train the S2M learned prompter of a segmenter checkpoint and store it.

The prompter is written into the checkpoint's ``extra["prompter"]`` (found there by ``--prompter learned|auto``)
or, with ``--out``, to a prompter file of its own. A prompter whose held-out box F1 is below the floor
``denseood.train.prompter.MIN_HELDOUT_F1`` (0.1) is warned about and, without ``--force``, written to
``NAME.prompter.pt`` beside the checkpoint instead of into it. The library verbs are
``denseood.train.prompter.train_prompter`` and ``store_prompter_in_checkpoint`` / ``LearnedPrompter.save``.
The top level imports only the standard library, ``._common`` and ``scores.names``. See docs/architecture.md.
"""
from __future__ import annotations

import argparse

from ..s2m.names import PROMPTER_BACKBONES, PROMPTER_INPUTS
from ..scores.names import DEFAULT_SCORE, score_help
from ._common import add_code_options, add_config, add_device, add_verb, nonnegative_int, positive_float, positive_int


def score_thresh_arg(text: str) -> float | str:
    """"auto" or a number in [0, 1] (argparse type of --score-thresh)."""
    if text == "auto":
        return "auto"
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'auto' or a number in [0, 1]")
    return v


score_thresh_arg.__name__ = "score_thresh"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "train-prompter", help="train the S2M learned prompter for a segmenter checkpoint",
                 description=__doc__.split("\nThe top level")[0])
    p.add_argument("--checkpoint", required=True, help="the model whose score maps the prompter reads: denseood checkpoint .pt | hf:DIR | torchvision:NAME:FILE | python:MODULE:FACTORY (not .pt: --out is required)")
    add_code_options(p)
    p.add_argument("--dataset", default="synthetic", help="dataset reader of the inlier training images")
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--out", default=None, help="where to write the prompter (default: stored inside --checkpoint)")
    p.add_argument("--negatives", default="flow",
                   help="pasted negatives: flow (the checkpoint's flow, else an untrained one) | paste:DIR (objects cut "
                        "from images in DIR)")
    p.add_argument("--score", default=DEFAULT_SCORE, help=score_help("anomaly score the prompter is trained on"))
    p.add_argument("--steps", type=positive_int, default=300, help="optimiser steps")
    p.add_argument("--batch-size", type=positive_int, default=4, help="crops per step")
    p.add_argument("--crop", type=positive_int, default=256, help="side of the square training crops in pixels (>= 32)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="AdamW learning rate (cosine schedule, 5%% warm-up)")
    add_device(p)
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (pool, crops, pasted negatives)")
    p.add_argument("--backbone", default="tiny", choices=PROMPTER_BACKBONES, help="detector backbone (random init)")
    p.add_argument("--input", default="score", choices=tuple(PROMPTER_INPUTS), help="detector input channels")
    p.add_argument("--pool-size", type=positive_int, default=128,
                   help="pasted training images scored once and cropped repeatedly")
    p.add_argument("--score-thresh", type=score_thresh_arg, default="auto",
                   help="the prompter's confidence cut on detector scores, stored with it (not an anomaly threshold); "
                        "auto = best box F1 on held-out pasted images")
    p.add_argument("--force", action="store_true",
                   help="store the prompter in --checkpoint even when its held-out box F1 is below the floor (0.1; "
                        "without --force such a prompter goes to NAME.prompter.pt beside the checkpoint)")
    add_config(p)
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..io import clean_stale_temp
    from ..outdir import probed_dir
    from ..train.prompter import require_checkpoint_for_storage

    if not args.out:
        require_checkpoint_for_storage(args.checkpoint)  # an hf:/torchvision:/python: model cannot hold it
    # the folder the prompter will be written into (--out's parent, else the checkpoint's), probed before any work;
    # a refused run removes the folder the probe made
    target = Path(args.out).parent if args.out else Path(args.checkpoint).parent
    with probed_dir(target, "--out" if args.out else "--checkpoint"):
        clean_stale_temp(target, recursive=False)
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from ..train.prompter import train_prompter

    prompter = train_prompter(args.checkpoint, args.root, dataset=args.dataset, negatives=args.negatives,
                              score=args.score, steps=args.steps, batch_size=args.batch_size, crop=args.crop,
                              lr=args.lr, device=args.device, seed=args.seed, backbone=args.backbone,
                              input=args.input, pool_size=args.pool_size, score_thresh=args.score_thresh,
                              weights=args.weights, trust_code=args.trust_code)
    _write(prompter, args.out, args.checkpoint, force=args.force)
    cal = prompter.train_info.get("calibration") or {}
    extra = (f"; confidence cut {prompter.score_thresh:.3f} (held-out box F1 {cal['f1']:.3f})" if "f1" in cal
             else f"; confidence cut {prompter.score_thresh:.3f}")
    print(f"final loss {prompter.train_info['final_loss']:.4f} after {prompter.train_info['steps']} steps{extra}")
    return 0


def _write(prompter, out: str | None, checkpoint: str, *, force: bool) -> None:
    """Write the prompter to ``out``, else into ``checkpoint``; one below the held-out F1 floor is not stored in
    the checkpoint without ``force`` (it goes to ``fallback_prompter_path`` instead) and is warned about in one
    line on stderr."""
    import sys

    from ..train.prompter import fallback_prompter_path, store_prompter_in_checkpoint, weak_prompter_note

    weak = weak_prompter_note(prompter)
    if weak and not out and not force:
        out = str(fallback_prompter_path(checkpoint))
        print(f"warning: {weak}; NOT stored in {checkpoint} but written to {out} (pass --force to store it there)",
              file=sys.stderr)
    elif weak:
        print(f"warning: {weak}", file=sys.stderr)
    if out:
        path = prompter.save(out)
        print(f"prompter written to {path} (use it with --prompter {path})")
    else:
        path = store_prompter_in_checkpoint(prompter, checkpoint)
        print(f"prompter stored in {path} under extra['prompter'] (used by --prompter learned|auto)")
